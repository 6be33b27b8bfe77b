# Sourced by run_all.sh and sanitize.sh on the GPU machine.
# cuBLAS (the training step's projections and the unfused LoRA rows, loaded at run time):
# the toolkit's, or the copy that PyTorch's wheels bring, where the loader does not find one.
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
