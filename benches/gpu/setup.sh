# Sourced on the GPU machine by run_all.sh, sanitize.sh and goal_shapes.sh, from the repository
# root, with gpu-bin/gpu-bin.tar.xz carried from a build here (stage.sh). Sets `out` ($OUT, else
# bench-out/) and `bin` (the unpacked archive), and makes what the binaries expect:
# - the path they were built in (CARGO_MANIFEST_DIR: the tests' fixtures), linked to here;
# - cuBLAS on the loader's path (the step's projections and the unfused LoRA rows load it at run
#   time): the toolkit's, or the copy PyTorch's wheels bring;
# - a stand-in multilingual-e5-small in $POLYADAPT_CACHE (standin_model.py; the real one is
#   over the carry limit).
# Returns non-zero, having said why, when any of it fails.
out="${OUT:-bench-out}"
mkdir -p "$out"
bin="$(mktemp -d)"
python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' gpu-bin/gpu-bin.tar.xz "$bin" ||
    { echo "setup.sh: no gpu-bin/gpu-bin.tar.xz (run benches/gpu/stage.sh here first, and carry gpu-bin)"; return 2; }
built="$(cat "$bin/manifest_dir")"
[ -e "$built" ] || { mkdir -p "$(dirname "$built")" && ln -s "$PWD" "$built"; } ||
    { echo "setup.sh: cannot link $built to $PWD"; return 2; }
libs="$(python3 -c '
import glob, os
dirs = ["/usr/local/cuda/lib64"]
try:
    import nvidia
    for p in nvidia.__path__:
        dirs += glob.glob(os.path.join(p, "*", "lib")) + glob.glob(os.path.join(p, "*", "*", "lib"))
except ImportError:
    pass
print(":".join(d for d in dirs if glob.glob(os.path.join(d, "libcublas.so*"))))
')"
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$libs"
export POLYADAPT_CACHE="$bin/cache"
python3 benches/gpu/standin_model.py make "$bin/e5-small" "$POLYADAPT_CACHE" >/dev/null ||
    { echo "setup.sh: making the stand-in e5-small failed"; return 2; }
