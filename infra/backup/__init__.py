"""pgBackRest backups, point-in-time restores and the restore drill.

`python -m infra.backup {info,check,backup,restore,drill}`: see infra/backup/cli.py.
"""
