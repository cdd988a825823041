#!/usr/bin/env bash
# One nas study searched by a SLURM job array: every array task is one worker on the same PostgreSQL
# study, and together they train exactly --trials candidates. Preempted or cancelled tasks (SIGTERM)
# queue their running candidate again; a task killed outright is failed by the heartbeat and its
# candidate re-run by another task. Resubmitting the same script resumes the study.
#
#   sbatch examples/slurm-search.sh            (set the database below first)
#
# The password is never put in the URL (it would show in `ps` and job logs): libpq reads it from
# ~/.pgpass (chmod 600), a line like  db.example.org:5432:nas:nas:PASSWORD
#SBATCH --job-name=nas-search
#SBATCH --array=0-7                 # 8 workers
#SBATCH --cpus-per-task=4
#SBATCH --gres=gpu:1                # one GPU per worker; drop on CPU-only partitions
#SBATCH --time=04:00:00
#SBATCH --signal=TERM@120           # SIGTERM 2 min before the time limit: the worker stops cleanly
#SBATCH --output=logs/nas-%A_%a.out
set -euo pipefail

STORAGE="${NAS_STORAGE:-postgresql://nas@db.example.org:5432/nas}"
STUDY="${NAS_STUDY:-resnet-5m}"

# Each task writes trials.csv/report.html in its own folder; the study itself is shared.
exec srun nas search \
  --storage "$STORAGE" --study "$STUDY" \
  --budget 5M --trials 400 --space search_spaces/default.yaml --data cifar10 \
  --results-dir "results/task-${SLURM_ARRAY_TASK_ID}"
