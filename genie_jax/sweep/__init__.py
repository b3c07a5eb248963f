"""`genie-jax sweep`: a grid of training runs (and their evaluations), run one after another,
resumable, shardable over independent workers, and summarised in a report.

  spec.py    the sweep's definition: config, grid, seeds, upstream stages, evaluation; validation
             of every key before anything runs; the plan (run folders, upstream runs, names)
  execute.py runs the plan: upstream runs once each, then every run and its evaluations; resume,
             shards, locks, failures
  report.py  `genie-jax sweep report`: mean and std over seeds, differences from a baseline
             (markdown + CSV), learning curves (PNG)

ROOT layout:
  sweep.json                      the definition (a root holding another sweep is refused)
  upstream/STAGE/NAME/            shared tokenizer/LAM runs, one per distinct upstream config
  runs/NAME/                      one train workdir per grid point and seed, and its
      eval/ | eval_KEY=VALUE/     evaluations (one per eval-only variant)
      sweep_run.json              written when the run and all its evaluations are done
  report/                         report.md, report.csv, curves_*.png
"""
