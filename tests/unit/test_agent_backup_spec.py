"""The spec's backup section: its rules (one line per problem, by path), its secrets kept out of
the readable part, and what apply renders from it (root-only restic files, the timer units)."""
import copy
import functools
import os
import posixpath
import shutil
import subprocess

import pytest

from agent import backup_config, example, files, keys, render
from agent.contract import DATA_DIR, MAIL_DIR
from agent.spec import SpecError, load, merge, public_view, split

PASSWORD = "correct horse battery staple"
SECRET_KEY = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


@functools.lru_cache(maxsize=1)
def _base() -> dict:
    return example.example(dkim_pem=example.dkim_key(1024))


def with_backup(**backup) -> dict:
    data = copy.deepcopy(_base())
    data["backup"] = {"repository": "/srv/backup/repo", "password": PASSWORD, **backup}
    return data


def errors_of(data) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load(data)
    return exc.value.errors


def test_absent_section_means_no_backups():
    assert load(copy.deepcopy(_base())).backup is None


def test_defaults_are_hourly_and_the_documented_retention():
    b = load(with_backup()).backup
    assert (b.interval_min, vars(b.keep)) == (60, {"hourly": 24, "daily": 7, "weekly": 4,
                                                   "monthly": 6})


@pytest.mark.parametrize("repo", [
    "/srv/backup/repo", "/var/backups/mail",
    "sftp:backup@backup.example.org:/srv/restic", "sftp://backup@192.0.2.7:2222//srv/restic",
    "s3:s3.amazonaws.com/mail-backup", "s3:https://minio.example.org:9000/mail/host1",
    "rest:https://backup.example.org:8000/mail/", "rest:http://[2001:db8::5]:8000/",
    "azure:mail-backup:/host1",
])
def test_each_backend_form_is_accepted(repo):
    env = {"AZURE_ACCOUNT_NAME": "acct", "AZURE_ACCOUNT_KEY": "k"} if repo.startswith("azure") \
        else {}
    assert load(with_backup(repository=repo, env=env)).backup.repository == repo


@pytest.mark.parametrize("backup, expected", [
    ({"repository": "backup/repo"}, "backup.repository: expected an absolute path, sftp:"),
    ({"repository": f"{DATA_DIR}/restic"}, "backup.repository: must not be inside or above "
                                           f"the mail data {DATA_DIR}"),
    ({"repository": f"{MAIL_DIR}/example.test"}, "backup.repository: must not be inside"),
    ({"repository": DATA_DIR}, "backup.repository: must not be inside or above"),
    ({"repository": posixpath.dirname(DATA_DIR)}, "backup.repository: must not be inside or above"),
    ({"repository": "/srv/backup/../mail"}, "backup.repository: not a normalised absolute path"),
    ({"repository": "/srv/backup repo"}, "backup.repository: not a normalised absolute path"),
    ({"repository": "b2:bucket:/mail"}, "backup.repository: expected an absolute path"),
    ({"repository": "s3:https://minio.example.org/Bad_Bucket"}, "valid bucket name"),
    ({"repository": "sftp:backup.example.org"}, "backup.repository: expected sftp:user@host"),
    ({"repository": "rest:https://backup.example.org/ x"}, "backup.repository: not a URL"),
    ({"repository": "azure:Mail:/x"}, "backup.repository: expected azure:CONTAINER:/path"),
    ({"interval_min": 45}, "backup.interval_min: expected one of 5, 10, 12, 15, 20, 30, 60"),
    ({"interval_min": "60"}, "backup.interval_min: expected an integer"),
    ({"keep": {"hourly": -1}}, "backup.keep.hourly: must be >= 0"),
    ({"keep": {"hourly": 0, "daily": 0, "weekly": 0, "monthly": 0}},
     "backup.keep: at least one of hourly, daily, weekly, monthly must be > 0"),
    ({"keep": {"yearly": 2}}, "backup.keep.yearly: unknown key"),
    ({"colour": "blue"}, "backup.colour: unknown key"),
    ({"password": "short"}, "backup.password: at least 12 characters"),
    ({"password": PASSWORD + " "}, "backup.password: no leading/trailing whitespace"),
    ({"password": None}, "backup.password (secrets.json: backup_password): required"),
    ({"env": {"aws_key": "x"}}, "backup.env['aws_key']: not an environment variable name"),
    ({"env": {"RESTIC_PASSWORD": "x"}}, "backup.env['RESTIC_PASSWORD']: set by the agent"),
    ({"env": {"LD_PRELOAD": "/x.so"}}, "backup.env['LD_PRELOAD']: would change how"),
    ({"env": {"AWS_SECRET_ACCESS_KEY": "a\nb"}}, "backup.env['AWS_SECRET_ACCESS_KEY']: "
                                                 "expected a non-empty string"),
    ({"env": {"RESTIC_REST_PASSWORD": "x"}}, "only for a rest: repository"),
    ({"repository": "azure:mail:/x"}, "backup.env: an azure: repository needs"),
])
def test_invalid_backup_value_is_reported_by_path(backup, expected):
    data = with_backup(**backup)
    if backup.get("password", "") is None:
        del data["backup"]["password"]
    errs = errors_of(data)
    assert any(e.startswith(expected) or expected in e for e in errs), errs


def test_credentials_in_a_url_are_refused_without_being_echoed():
    (err,) = errors_of(with_backup(repository="rest:https://mail:s3cr3t-pass@backup.example.org/"))
    assert "RESTIC_REST_USERNAME/RESTIC_REST_PASSWORD" in err and "s3cr3t" not in err


def test_every_backup_problem_is_listed_at_once():
    errs = errors_of(with_backup(repository="relative", interval_min=7, password="x"))
    assert {e.split(":")[0] for e in errs} == {"backup.repository", "backup.interval_min",
                                               "backup.password"}


def test_secrets_go_to_secrets_json_and_merge_back():
    data = with_backup(env={"AWS_SECRET_ACCESS_KEY": SECRET_KEY})
    public, secrets = split(data)
    assert PASSWORD not in repr(public) and SECRET_KEY not in repr(public)
    assert secrets["backup_password"] == PASSWORD
    assert secrets["backup_env"] == {"AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    assert load(merge(public, secrets)) == load(data)
    view = public_view(load(data))
    assert view["backup"]["repository"] == "/srv/backup/repo"
    assert PASSWORD not in repr(view) and SECRET_KEY not in repr(view)


def test_backup_secrets_without_a_backup_section_are_refused():
    public, secrets = split(copy.deepcopy(_base()))
    with pytest.raises(SpecError, match="secrets.backup_password: given, but the spec has no "
                                        "backup section"):
        merge(public, {**secrets, "backup_password": PASSWORD})


# -- what apply renders --------------------------------------------------------------------
def rendered(data) -> tuple:
    spec = load(data)
    return spec, render.render(spec, keys.self_signed("mail.example.test")), \
        {t.path: t for t in render.targets(spec)}


def test_no_backup_section_renders_no_backup_file():
    _, out, _ = rendered(copy.deepcopy(_base()))
    assert not [p for p in out if "backup" in p]


def test_restic_files_are_root_only_and_hold_the_secrets():
    spec, out, targets = rendered(with_backup(env={"AWS_SECRET_ACCESS_KEY": SECRET_KEY}))
    env, pw = backup_config.ENV_FILE, backup_config.PASSWORD_FILE
    for path in (env, pw):
        assert (targets[path].mode, targets[path].owner, targets[path].group) == \
            (0o600, "root", "root")
    assert out[pw] == (PASSWORD + "\n").encode()
    lines = out[env].decode().splitlines()
    assert "RESTIC_REPOSITORY=/srv/backup/repo" in lines
    assert f"RESTIC_PASSWORD_FILE={pw}" in lines and f"AWS_SECRET_ACCESS_KEY={SECRET_KEY}" in lines
    assert PASSWORD not in out[env].decode()  # the password is in its file only
    others = b"".join(v for p, v in out.items() if p not in (env, pw))
    assert PASSWORD.encode() not in others and SECRET_KEY.encode() not in others


def test_rest_credentials_go_into_the_url_of_the_root_only_file_only():
    _, out, _ = rendered(with_backup(repository="rest:https://backup.example.org:8000/mail/",
                                     env={"RESTIC_REST_USERNAME": "host1",
                                          "RESTIC_REST_PASSWORD": "p@ss/word"}))
    lines = out[backup_config.ENV_FILE].decode().splitlines()
    assert "RESTIC_REPOSITORY=rest:https://host1:p%40ss%2Fword@backup.example.org:8000/mail/" \
        in lines
    assert not [l for l in lines if l.startswith("RESTIC_REST_")]


def test_a_plan_diff_never_shows_the_backup_secrets():
    spec, out, targets = rendered(with_backup(env={"AWS_SECRET_ACCESS_KEY": SECRET_KEY}))
    for path in (backup_config.ENV_FILE, backup_config.PASSWORD_FILE):
        change = files.Change(targets[path], out[path], b"old\n", True, False)
        assert files.diff(change) == [f"--- {path}: secret content changes (not shown)"]


@pytest.mark.parametrize("interval, calendar", [
    (15, "*-*-* *:00/15:00"), (60, "*-*-* *:00:00"), (120, "*-*-* 00/2:00:00"),
    (1440, "*-*-* 00:00:00")])
def test_timer_fires_on_the_interval_and_catches_up_after_downtime(interval, calendar):
    _, out, targets = rendered(with_backup(interval_min=interval))
    timer = out["/etc/systemd/system/bulletproof-backup.timer"].decode()
    assert f"OnCalendar={calendar}\n" in timer and "Persistent=true\n" in timer
    assert "WantedBy=timers.target" in timer
    if shutil.which("systemd-analyze"):
        assert subprocess.run(["systemd-analyze", "calendar", calendar],
                              capture_output=True).returncode == 0


@pytest.mark.parametrize("unit, job, calendar", [
    ("bulletproof-backup", "run", None), ("bulletproof-backup-prune", "prune", "*-*-* 03:40:00"),
    ("bulletproof-backup-check", "check", "Sun *-*-* 04:40:00")])
def test_each_job_has_a_oneshot_service_and_a_persistent_timer(unit, job, calendar):
    _, out, targets = rendered(with_backup())
    service = out[f"/etc/systemd/system/{unit}.service"].decode()
    timer = out[f"/etc/systemd/system/{unit}.timer"].decode()
    assert "Type=oneshot\n" in service
    assert f"ExecStart=/usr/local/sbin/bulletproof-agent backup {job}\n" in service
    assert "Persistent=true" in timer and (calendar is None or f"OnCalendar={calendar}" in timer)
    assert render.HEADER in service and render.HEADER in timer
    assert targets[f"/etc/systemd/system/{unit}.service"].services == ("systemd",)


def test_rendered_units_pass_systemd_analyze(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("no systemd-analyze")
    _, out, _ = rendered(with_backup())
    units = []
    for path, data in out.items():
        if path.startswith("/etc/systemd/system/"):
            units.append(tmp_path / os.path.basename(path))
            units[-1].write_bytes(data)
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, units)],
                          capture_output=True, text=True)
    # About our units only (it loads the machine's others too), and the agent binary is not
    # installed on this machine.
    problems = [l for l in proc.stderr.splitlines() if "bulletproof-backup" in l
                and "/usr/local/sbin/bulletproof-agent is not executable" not in l]
    assert not problems, proc.stderr
