//! Prompts for instruction tuning and for generating with a decoder: how an example (a task
//! definition, an input, its output) and `k` demonstrations become the prompt the model reads
//! and the target it learns to write.
//!
//! Texts are trimmed of surrounding whitespace first. The strings, exactly (`\n` a newline):
//!
//! - `zero_shot`: `{definition}\n\nInput: {input}\nOutput:`; without a definition
//!   `Input: {input}\nOutput:`. Target: ` {output}` (one space first) and the model's
//!   end-of-sequence token.
//! - `few_shot` with `k` demonstrations: the blocks `{definition}`, then
//!   `Input: {demo_i input}\nOutput: {demo_i output}` for each demonstration, then
//!   `Input: {input}\nOutput:`, joined by `\n\n` (`zero_shot` is `few_shot` with k = 0). Target
//!   as for `zero_shot`.
//! - `chat`: the model's chat template, when it is ChatML (SmolLM2, Qwen, ...; see
//!   [`ChatTemplate`]): `<|im_start|>system\n{system}<|im_end|>\n` when the template has a
//!   default system message, then for each demonstration
//!   `<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{demo output}<|im_end|>\n`,
//!   then `<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n`. The first user turn is
//!   `{definition}\n\n{input}` (`{input}` without a definition), later ones `{input}`. Target:
//!   `{output}<|im_end|>`.
//!
//! The prompt is tokenised with the tokenizer's special tokens (a BOS where the tokenizer adds
//! one), the target without, and the two are concatenated, so the boundary between the
//! positions that only condition the loss and those it counts is exact. Generation stops at the
//! model's end-of-sequence tokens and, for `chat`, at `<|im_end|>`.

use std::path::Path;

use crate::data::niv2::Demo;
use crate::data::TextTokenizer;
use crate::engine::error::{Error, Result};
use crate::models::gguf::GgufFile;
use crate::models::llama::lm_loss::LmExample;
use crate::models::llama::ModelPath;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptFormat {
    ZeroShot,
    FewShot,
    Chat,
}

impl PromptFormat {
    pub const NAMES: [&'static str; 3] = ["zero_shot", "few_shot", "chat"];

    pub fn parse(s: &str) -> Option<PromptFormat> {
        match s {
            "zero_shot" => Some(PromptFormat::ZeroShot),
            "few_shot" => Some(PromptFormat::FewShot),
            "chat" => Some(PromptFormat::Chat),
            _ => None,
        }
    }
}

const IM_START: &str = "<|im_start|>";
const IM_END: &str = "<|im_end|>";

/// A chat template the engine renders (it does not run Jinja): ChatML, recognised by
/// `<|im_start|>` in the template text. A default system message is a literal
/// `<|im_start|>system\n...<|im_end|>` in the template (SmolLM2's: "You are a helpful AI
/// assistant named SmolLM, trained by Hugging Face"), taken when its text holds no template
/// syntax (quotes, `{`, `+`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatTemplate {
    ChatMl { system: Option<String> },
}

impl ChatTemplate {
    /// Recognises `template`; `source` names where it came from in errors.
    pub fn from_template(template: &str, source: &Path) -> Result<ChatTemplate> {
        if !template.contains(IM_START) {
            return Err(Error::format(
                source,
                "the chat template is not ChatML (no <|im_start|>): only ChatML templates are rendered; use the zero_shot or few_shot format",
            ));
        }
        let head = format!("{IM_START}system\n");
        let system = template.find(&head).and_then(|at| {
            let rest = &template[at + head.len()..];
            let text = &rest[..rest.find(IM_END)?];
            let literal = !text.is_empty() && !text.contains(['\'', '"', '{', '}', '+']);
            literal.then(|| text.to_string())
        });
        Ok(ChatTemplate::ChatMl { system })
    }

    /// The template of a model: a GGUF file's `tokenizer.chat_template`, else (a directory, or
    /// a GGUF file next to one) `tokenizer_config.json`'s `chat_template` or
    /// `chat_template.jinja`. `None` when the model has none.
    pub fn of_model(path: &ModelPath) -> Result<Option<ChatTemplate>> {
        if let ModelPath::Gguf(f) = path {
            let file = GgufFile::open(f)?;
            if let Some(v) = file.get("tokenizer.chat_template") {
                let text = v.as_str().ok_or_else(|| Error::config(f, "tokenizer.chat_template", "expected a string"))?;
                return ChatTemplate::from_template(text, f).map(Some);
            }
        }
        let dir = path.dir();
        let config = dir.join("tokenizer_config.json");
        if config.is_file() {
            let text = std::fs::read_to_string(&config).map_err(|e| Error::io("cannot read", &config, e))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::format(&config, format!("not valid JSON: {e}")))?;
            match v.get("chat_template") {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::String(t)) => return ChatTemplate::from_template(t, &config).map(Some),
                Some(_) => return Err(Error::config(&config, "chat_template", "expected one template (a string)")),
            }
        }
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            let text = std::fs::read_to_string(&jinja).map_err(|e| Error::io("cannot read", &jinja, e))?;
            return ChatTemplate::from_template(&text, &jinja).map(Some);
        }
        Ok(None)
    }
}

/// How examples become prompts and targets (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstructFormat {
    pub format: PromptFormat,
    /// The chat template (`chat` only).
    pub chat: Option<ChatTemplate>,
}

/// The text blocks of an example.
#[derive(Clone, Copy, Debug)]
pub struct PromptParts<'a> {
    pub definition: Option<&'a str>,
    pub demos: &'a [Demo],
    pub input: &'a str,
}

impl InstructFormat {
    /// `chat` needs the template; the other formats take none.
    pub fn new(format: PromptFormat, chat: Option<ChatTemplate>) -> Result<InstructFormat> {
        if format == PromptFormat::Chat && chat.is_none() {
            return Err(Error::Usage("the chat format needs the model's chat template, and the model has none".into()));
        }
        Ok(InstructFormat { format, chat: if format == PromptFormat::Chat { chat } else { None } })
    }

    /// The prompt text.
    pub fn prompt(&self, p: &PromptParts<'_>) -> String {
        let definition = p.definition.map(str::trim).filter(|d| !d.is_empty());
        match &self.chat {
            None => {
                let mut blocks: Vec<String> = definition.map(str::to_string).into_iter().collect();
                blocks.extend(p.demos.iter().map(|d| format!("Input: {}\nOutput: {}", d.input.trim(), d.output.trim())));
                blocks.push(format!("Input: {}\nOutput:", p.input.trim()));
                blocks.join("\n\n")
            }
            Some(ChatTemplate::ChatMl { system }) => {
                let mut s = String::new();
                if let Some(sys) = system {
                    s.push_str(&format!("{IM_START}system\n{sys}{IM_END}\n"));
                }
                let first = |input: &str| match definition {
                    Some(d) => format!("{d}\n\n{}", input.trim()),
                    None => input.trim().to_string(),
                };
                for (i, d) in p.demos.iter().enumerate() {
                    let user = if i == 0 { first(&d.input) } else { d.input.trim().to_string() };
                    s.push_str(&format!("{IM_START}user\n{user}{IM_END}\n{IM_START}assistant\n{}{IM_END}\n", d.output.trim()));
                }
                let user = if p.demos.is_empty() { first(p.input) } else { p.input.trim().to_string() };
                s.push_str(&format!("{IM_START}user\n{user}{IM_END}\n{IM_START}assistant\n"));
                s
            }
        }
    }

    /// The target text (the end-of-sequence token of the plain formats is added as a token by
    /// [`InstructFormat::encode`]).
    pub fn target(&self, output: &str) -> String {
        match &self.chat {
            None => format!(" {}", output.trim()),
            Some(ChatTemplate::ChatMl { .. }) => format!("{}{IM_END}", output.trim()),
        }
    }

    /// The prompt's tokens (special tokens as the tokenizer adds them).
    pub fn encode_prompt(&self, tok: &TextTokenizer, p: &PromptParts<'_>) -> Result<Vec<u32>> {
        tok.encode_ids(&self.prompt(p), true)
    }

    /// Prompt and target as one training sequence; `eos` ends the plain formats' targets.
    pub fn encode(&self, tok: &TextTokenizer, p: &PromptParts<'_>, output: &str, eos: Option<u32>) -> Result<LmExample> {
        let mut ids = self.encode_prompt(tok, p)?;
        let prompt_len = ids.len();
        if prompt_len == 0 {
            return Err(Error::Usage("an empty prompt: the first target token needs a token to follow".into()));
        }
        ids.extend(tok.encode_ids(&self.target(output), false)?);
        if self.chat.is_none() {
            ids.push(eos.ok_or_else(|| Error::Usage("the model has no end-of-sequence token to end the targets with".into()))?);
        }
        Ok(LmExample { ids, prompt_len })
    }

    /// The tokens that end a generation: the model's end-of-sequence tokens, and `<|im_end|>`
    /// for ChatML.
    pub fn stop_tokens(&self, tok: &TextTokenizer, eos: &[u32]) -> Result<Vec<u32>> {
        let mut stop = eos.to_vec();
        if let Some(ChatTemplate::ChatMl { .. }) = &self.chat {
            let id = tok.token_to_id(IM_END).ok_or_else(|| Error::Usage(format!("the chat format needs the token {IM_END}, which the tokenizer lacks")))?;
            if !stop.contains(&id) {
                stop.push(id);
            }
        }
        if stop.is_empty() {
            return Err(Error::Usage("the model has no end-of-sequence token: generation would not know where to stop".into()));
        }
        Ok(stop)
    }
}
