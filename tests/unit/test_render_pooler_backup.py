"""pgBackRest settings, pgbackrest.conf, the backup schedule and archiving in postgresql.conf."""

from __future__ import annotations

import configparser

import pytest

from infra import config, render
from infra.errors import ConfigError, RenderError
from infra.render.backup import restore_settings

HOST = render.HostPaths(data_dir="/var/lib/pg/data", socket_dir="/run/pg",
                        pgbackrest_config="/etc/pgbackrest/pgbackrest.conf")
BPATHS = render.BackupPaths(repo_path="/var/lib/pgbackrest", log_path="/var/log/pgbackrest",
                            lock_path="/tmp/pgbackrest", spool_path="/var/spool/pgbackrest")


def parse(text: str) -> configparser.ConfigParser:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(text)
    return ini


def test_posix_repo_with_retention_and_one_stanza() -> None:
    cfg = config.load({"backup": {"stanza": "pg1", "retention_full": 4,
                                  "retention_full_type": "count", "retention_diff": 3}}, "local")
    ini = parse(render.pgbackrest_conf(cfg, HOST, BPATHS))
    g = ini["global"]
    assert (g["repo1-type"], g["repo1-path"]) == ("posix", "/var/lib/pgbackrest")
    assert (g["repo1-retention-full"], g["repo1-retention-diff"]) == ("4", "3")
    assert ini.sections() == ["global", "pg1"]
    assert ini["pg1"]["pg1-path"] == "/var/lib/pg/data"
    assert ini["pg1"]["pg1-port"] == "5432"
    assert ini["pg1"]["pg1-user"] == "postgres"  # break-glass, on the socket by peer


def test_s3_repo_for_prod_uses_the_instance_role() -> None:
    cfg = config.load({"backup": {"repo": "s3", "s3": {
        "bucket": "acme-pg-backups", "region": "eu-west-1", "path": "/prod"}}}, "local")
    g = parse(render.pgbackrest_conf(cfg, HOST, BPATHS))["global"]
    assert g["repo1-type"] == "s3"
    assert (g["repo1-s3-bucket"], g["repo1-s3-region"]) == ("acme-pg-backups", "eu-west-1")
    assert g["repo1-s3-endpoint"] == "s3.eu-west-1.amazonaws.com"
    assert g["repo1-s3-key-type"] == "auto"
    assert g["repo1-path"] == "/prod"
    assert not any("key" in k and k != "repo1-s3-key-type" for k in g)


def test_s3_repo_without_a_bucket_cannot_render() -> None:
    cfg = config.load({"backup": {"repo": "s3"}}, "local")
    with pytest.raises(RenderError, match="no bucket"):
        render.pgbackrest_conf(cfg, HOST, BPATHS)


def test_postgresql_conf_archives_through_pgbackrest_only_with_a_config() -> None:
    cfg = config.load({"backup": {"stanza": "main"}}, "local")
    with_repo = render.postgresql_conf(cfg, HOST, timescaledb=False)
    assert "archive_mode = on" in with_repo
    assert ("archive_command = 'pgbackrest --config=/etc/pgbackrest/pgbackrest.conf "
            "--stanza=main archive-push %p'") in with_repo
    bare = render.HostPaths(data_dir=HOST.data_dir, socket_dir=HOST.socket_dir)
    assert "archive_mode = off" in render.postgresql_conf(cfg, bare, timescaledb=False)


def test_standby_conninfo_names_a_passfile_not_a_password() -> None:
    cfg = config.load({}, "local")
    standby = render.Standby(primary_host="10.0.0.5", primary_port=5432, user="replicator",
                             slot="replica_1", passfile="/var/lib/pg/.replication.pgpass")
    conf = render.postgresql_conf(cfg, HOST, timescaledb=False, standby=standby,
                                  listen="10.0.0.6")
    assert ("primary_conninfo = 'host=10.0.0.5 port=5432 user=replicator "
            "passfile=/var/lib/pg/.replication.pgpass application_name=replica_1'") in conf
    assert "primary_slot_name = 'replica_1'" in conf
    assert "listen_addresses = '10.0.0.6'" in conf
    assert "password" not in standby.conninfo


def test_schedule_is_a_cron_d_file_with_full_diff_incr() -> None:
    cfg = config.load({"backup": {"schedule": {"full": "30 2 * * 0", "diff": "",
                                               "incr": "0 */6 * * *"}}}, "local")
    text = render.backup_schedule(cfg, "/etc/pgbackrest/pgbackrest.conf")
    jobs = [line.split() for line in text.splitlines()
            if line and not line.startswith("#") and "=" not in line.split()[0]]
    assert [j[:6] for j in jobs] == [["30", "2", "*", "*", "0", "postgres"],
                                     ["0", "*/6", "*", "*", "*", "postgres"]]
    assert [j[-2] for j in jobs] == ["--type=full", "--type=incr"]


@pytest.mark.parametrize(("backup", "message"), [
    ({"schedule": {"full": "every sunday"}},
     "backup.schedule.full='every sunday': expected a cron"),
    ({"schedule": {"full": ""}}, "backup.schedule.full: a full-backup schedule is required"),
    ({"retention_full": 0}, "backup.retention_full=0: allowed range is 1"),
    ({"retention_full_type": "weeks"}, "backup.retention_full_type='weeks': allowed values"),
    ({"stanza": "my stanza"}, "backup.stanza='my stanza': expected letters"),
    ({"s3": {"bucket": "b-1"}}, "backup.s3.bucket: S3 settings need"),
    ({"repo": "s3", "s3": {"bucket": "Bad_Bucket"}}, "backup.s3.bucket='Bad_Bucket'"),
])
def test_bad_backup_settings_name_key_and_allowed(backup: dict[str, object],
                                                  message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load({"backup": backup}, "local")


def test_prod_defaults_to_an_s3_repository() -> None:
    sec = config.Section({}, "backup")
    assert config.parse_backup(sec, "aws", "eu-central-1").repo == "s3"


def test_restore_settings_give_the_copy_its_own_port_and_no_archiving() -> None:
    text = restore_settings("127.0.0.1", 45999, "/tmp/it's here")
    assert "port = 45999\n" in text
    assert "unix_socket_directories = '/tmp/it''s here'\n" in text
    assert "archive_mode = 'off'\n" in text and "primary_conninfo = ''\n" in text
    assert text.endswith("\n")
