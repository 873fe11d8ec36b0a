"""mint-s3job: submit Slurm jobs to a cloud cluster through an S3 bucket, dispatch them once.

Modules: `layout` (the seed's object names and ours), `config`, `store` (the
ObjectStore Protocol and its boto3 implementation), `manifest`, `submit`,
`jobs` (status/list/wait/cancel/clean), `fetch`, `slurm` (sbatch/scancel),
`dispatch`, `epilog`, `check`; `cli` is the click layer over them.
"""
