"""Ray job: sft training (Ray Train). Submitted by `stickgen submit sft --cluster ADDR -- ARGS`:

    python -m jobs.sft --config configs/sft_medium.yaml --data DIR [--init-from CKPT] [--workers N] [--gpu]
"""

from stickgen.train.recipe import job_main

if __name__ == "__main__":
    job_main("sft")
