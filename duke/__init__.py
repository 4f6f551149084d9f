import os

# torch's OpenMP threads spin-wait between parallel regions by default. On a small box shared with
# the web server and the queue worker that spinning steals the cores the work needs (a 5k-sample
# retrain measured 7x slower with 2 spinning threads under load). libgomp reads this once, when torch
# is first imported, so it is set here, before any duke module imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
