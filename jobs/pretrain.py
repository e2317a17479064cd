"""Ray job: pretrain training (Ray Train). Submitted by `stickgen submit pretrain --cluster ADDR -- ARGS`:

    python -m jobs.pretrain --config configs/pretrain_medium.yaml --data DIR [--init-from CKPT] [--workers N] [--gpu]
"""

from stickgen.train.recipe import job_main

if __name__ == "__main__":
    job_main("pretrain")
