"""Run the PyTorch reference's throughput.py and print its process's peak resident
memory (MiB) as a last line `peak_mib N`, for bench/compare.sh's memory column."""
import os, resource, runpy, sys
sys.path.insert(0, os.getcwd())
sys.argv = ["throughput.py", *sys.argv[1:]]
runpy.run_path("throughput.py", run_name="__main__")
print(f"peak_mib {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
