"""What a run folder holds and who may write it: file names, claiming a folder, `load_run`, the same-config
check (`layout`), and the writer's lock (`lock`).
"""
