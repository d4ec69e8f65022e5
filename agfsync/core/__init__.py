"""The pure core: everything the workflow imports when Snakemake parses it.

No torch, no diffusers, no LLM client: `snakemake -n` imports only this wing (a test imports
every module here in one process and asserts that torch was not imported). It holds the
config (loading, `extends:`, validation) and its typed settings, the category table, the
results layout, the DAG helpers of the rules, seeds, ids, file io, shards, pair selection,
benchmark metadata, TIFA file parsing, logging and secret masking, process lifetime and GPU
binding. Nothing here imports another wing of agfsync.
"""
