"""Training-step throughput of every method on the fashion-cpu student.

Precision, memory format, compile, teacher share.

Usage: python -m bench.throughput [--methods sns,squeeze,kd,vicreg,simsiam] [--batch 256] [--steps 4] [--warmup 1]
                                  [--threads 1] [--no-compile] [--teacher SPEC] [--out bench/results/throughput.json]
                                  [--bank-only | --no-bank] [--bank-steps 3]
(= `sns bench throughput ...`)

Every case (method x variant) is built first, then timed one step at a time in interleaved rounds, so load from
other jobs on the machine hits all cases alike; medians are reported. A step is what the engine does: real
batch + teacher sampling (`step_inputs`), the objective's forward under autocast, backward, SGD step.
Also measured: the matmul peak (GFLOP/s) and the student's FLOPs per image pass, which give the FLOP-bound
limit of image passes per second and the fraction of it each case reaches.

Feature bank (teacher_bank=N): sns and squeeze steps with the live teacher against the same steps drawing
from a bank (engine/bank.py), for the Fashion-MNIST teacher and a paper-size 512-channel StyleGAN2 at 32 px
(random weights: speed only), plus the one-time cost of sampling the bank and the effect of storing bank
images as uint8 on one step's loss and gradient. --bank-only measures just that and updates the JSON's
"feature_bank" entry of an earlier full run.

Modules: steps (one timed case: a method x variant stepped like the engine), bank (live teacher vs feature
bank), cli (the command, the Markdown table).
"""
