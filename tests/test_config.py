"""Settings: defaults < mailer.toml < .env < environment < flags, each value checked by name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer import config
from mailer.cli import main
from mailer.errors import ConfigError

PROJECT = Path(__file__).resolve().parents[1]


def project(tmp_path: Path, toml: str | None = None, dotenv: str | None = None) -> Path:
    root = tmp_path / "project"
    (root / "issues").mkdir(parents=True)
    if toml is not None:
        (root / "mailer.toml").write_text(toml, encoding="utf-8")
    if dotenv is not None:
        (root / ".env").write_text(dotenv, encoding="utf-8")
    return root


def clean_env() -> dict[str, str | None]:
    """For CliRunner: unset every MAILER_* variable this process happens to have."""
    return {k: None for k in os.environ if k.startswith("MAILER_")}


# -- precedence ----------------------------------------------------------------------------------

LAYERS = ["default", "mailer.toml", ".env", "environment", "flag"]


@pytest.mark.parametrize("top", LAYERS)
def test_precedence(tmp_path, top):
    """smtp_host set in every layer up to `top`: the highest one wins and is named as source."""
    upto = LAYERS[: LAYERS.index(top) + 1]
    root = project(
        tmp_path,
        toml='smtp_host = "from-toml"\n' if "mailer.toml" in upto else "",
        dotenv="MAILER_SMTP_HOST=from-dotenv\n" if ".env" in upto else None,
    )
    environ = {"MAILER_SMTP_HOST": "from-env"} if "environment" in upto else {}
    overrides = {"smtp_host": "from-flag"} if "flag" in upto else None
    settings = config.load(root, overrides=overrides, environ=environ)
    expected = {
        "default": "localhost",
        "mailer.toml": "from-toml",
        ".env": "from-dotenv",
        "environment": "from-env",
        "flag": "from-flag",
    }[top]
    assert settings.smtp_host == expected
    assert settings.sources.get("smtp_host", "default") == top


def test_layers_mix_per_key(tmp_path):
    root = project(
        tmp_path,
        toml='smtp_host = "toml-host"\nsmtp_port = 2525\nsmtp_user = "toml-user"\nrate = "5/s"\n',
        dotenv="MAILER_SMTP_USER=dotenv-user\nMAILER_RATE=6/s\n",
    )
    settings = config.load(
        root,
        overrides={"rate": None, "batch_size": 7},  # None means "flag not given"
        environ={"MAILER_RATE": "8/s"},
    )
    assert settings.smtp_host == "toml-host"
    assert settings.smtp_port == 2525
    assert settings.smtp_user == "dotenv-user"
    assert settings.rate == 8.0
    assert settings.batch_size == 7
    assert settings.smtp_security == "starttls"
    assert dict(settings.sources) == {
        "smtp_host": "mailer.toml",
        "smtp_port": "mailer.toml",
        "smtp_user": ".env",
        "rate": "environment",
        "batch_size": "flag",
    }


def test_empty_environment_value_does_not_override(tmp_path):
    root = project(tmp_path, toml='smtp_host = "toml-host"\n')
    assert config.load(root, environ={"MAILER_SMTP_HOST": ""}).smtp_host == "toml-host"


def test_types_are_coerced(tmp_path):
    root = project(tmp_path, dotenv="MAILER_SMTP_PORT=465\nMAILER_SMTP_VERIFY=no\n")
    settings = config.load(root, environ={"MAILER_PAUSE": "0.5", "MAILER_SMTP_SECURITY": "ssl"})
    assert settings.smtp_port == 465
    assert settings.smtp_verify is False
    assert settings.pause == 0.5
    assert settings.smtp_security == "ssl"


def test_from_key_maps_to_from_(tmp_path):
    root = project(tmp_path, toml='from = "News <n@example.org>"\n')
    assert config.load(root, environ={}).from_ == "News <n@example.org>"
    other = config.load(root, environ={"MAILER_FROM": "Other <o@example.org>"})
    assert other.from_ == "Other <o@example.org>"


def test_the_real_mailer_toml_loads(tmp_path):
    root = project(tmp_path, toml=(PROJECT / "mailer.toml").read_text(encoding="utf-8"))
    settings = config.load(root, environ={})
    assert settings.from_ == "NLP Newsletter <newsletter@example.org>"
    assert settings.unsubscribe_url == "https://newsletter.example.org/unsubscribe"
    assert settings.smtp_port == 587


def test_root_is_found_from_a_subfolder(tmp_path):
    root = project(tmp_path, toml='smtp_host = "toml-host"\n')
    (root / "issues" / "drafts").mkdir()
    settings = config.load(root / "issues" / "drafts", environ={})
    assert settings.root == root.resolve()
    assert settings.smtp_host == "toml-host"


# -- bad values name their key -------------------------------------------------------------------


def test_bad_port_in_toml(tmp_path):
    root = project(tmp_path, toml='smtp_port = "x"\n')
    with pytest.raises(ConfigError) as err:
        config.load(root, environ={})
    assert "smtp_port" in str(err.value)
    assert "mailer.toml" in str(err.value)
    assert "'x'" in str(err.value)
    assert err.value.exit_code == 2


def test_bad_port_in_environment(tmp_path):
    with pytest.raises(ConfigError) as err:
        config.load(project(tmp_path), environ={"MAILER_SMTP_PORT": "x"})
    assert "smtp_port" in str(err.value)
    assert "environment" in str(err.value)
    assert "MAILER_SMTP_PORT" in err.value.format_message()


def test_bad_port_in_dotenv(tmp_path):
    with pytest.raises(ConfigError, match=r"smtp_port \(from \.env\)"):
        config.load(project(tmp_path, dotenv="MAILER_SMTP_PORT=abc\n"), environ={})


@pytest.mark.parametrize("toml", ["smtp_port = true\n", "smtp_port = 70000\n", "smtp_port = 0\n"])
def test_port_out_of_range_or_wrong_type(tmp_path, toml):
    with pytest.raises(ConfigError, match="smtp_port"):
        config.load(project(tmp_path, toml=toml), environ={})


def test_bad_security(tmp_path):
    with pytest.raises(ConfigError) as err:
        config.load(project(tmp_path, toml='smtp_security = "tls"\n'), environ={})
    assert "smtp_security" in str(err.value)
    assert "'tls'" in str(err.value)
    assert "starttls" in str(err.value)  # says what would be right


def test_bad_security_from_flag(tmp_path):
    with pytest.raises(ConfigError, match="smtp_security"):
        config.load(project(tmp_path), overrides={"smtp_security": "tls"}, environ={})


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("rate", '"fast"'),
        ("batch_size", "0"),
        ("connections", "0"),
        ("unsubscribe_url", '"example.org/u"'),
        ("smtp_verify", '"maybe"'),
        ("pause", '"long"'),
    ],
)
def test_other_bad_values_name_their_key(tmp_path, setting, value):
    with pytest.raises(ConfigError) as err:
        config.load(project(tmp_path, toml=f"{setting} = {value}\n"), environ={})
    assert setting in str(err.value)


def test_bad_max_late_names_its_key(tmp_path):
    with pytest.raises(ConfigError, match="max_late"):
        config.load(project(tmp_path, toml='max_late = "soon"\n'), environ={})


def test_unknown_key_in_toml(tmp_path):
    with pytest.raises(ConfigError) as err:
        config.load(project(tmp_path, toml='smtp_hots = "typo"\n'), environ={})
    assert "'smtp_hots'" in str(err.value)
    assert "mailer.toml" in str(err.value)


def test_broken_toml(tmp_path):
    with pytest.raises(ConfigError, match="mailer.toml"):
        config.load(project(tmp_path, toml='smtp_host = "unclosed\n'), environ={})


def test_unknown_environment_variables_are_ignored(tmp_path):
    settings = config.load(project(tmp_path), environ={"MAILER_NOPE": "x", "MAILER_NOW": "y"})
    assert settings.smtp_host == "localhost"


# -- `mailer config` -----------------------------------------------------------------------------

PASSWORD = "pw-Vq7-never-print-me"
SECRET = "sk-Zx9-never-print-me-either"


def run_config(root: Path, **env: str):
    runner = CliRunner()
    cwd = os.getcwd()
    try:
        return runner.invoke(main, ["-C", str(root), "config"], env={**clean_env(), **env})
    finally:
        os.chdir(cwd)  # -C changes the working folder of this process


def config_lines(output: str) -> dict[str, str]:
    lines = {}
    for line in output.splitlines():
        if line.startswith("#"):
            continue
        key = line.split("=", 1)[0].strip()
        lines[key] = line
    return lines


def test_config_masks_secrets_and_names_sources(tmp_path):
    root = project(
        tmp_path,
        toml='smtp_host = "toml-host"\nsmtp_port = 2525\n',
        dotenv=f"MAILER_SECRET={SECRET}\nMAILER_SMTP_USER=dotenv-user\n",
    )
    result = run_config(root, MAILER_SMTP_PASSWORD=PASSWORD, MAILER_RATE="9/s")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    assert SECRET not in result.output
    assert "pw-" not in result.output and "sk-" not in result.output
    lines = config_lines(result.output)
    assert "'********'" in lines["smtp_password"]
    assert lines["smtp_password"].endswith("MAILER_SMTP_PASSWORD, from environment")
    assert "'********'" in lines["secret"]
    assert lines["secret"].endswith("MAILER_SECRET, from .env")
    assert "'toml-host'" in lines["smtp_host"] and lines["smtp_host"].endswith("from mailer.toml")
    assert "'2525'" in lines["smtp_port"] and lines["smtp_port"].endswith("from mailer.toml")
    assert "'dotenv-user'" in lines["smtp_user"] and lines["smtp_user"].endswith("from .env")
    assert "'9/s'" in lines["rate"] and lines["rate"].endswith("from environment")
    assert lines["smtp_security"].endswith("from default")
    # every setting is listed once
    assert set(lines) == {f.name.rstrip("_") for f in config._setting_fields()}
    assert result.output.startswith(f"# project {root.resolve()}")
    # one column for the '=' however long the longest name (dkim_ed25519_selector)
    columns = {line.index(" = ") for line in result.output.splitlines()[1:]}
    assert columns == {max(map(len, lines))}


def test_config_without_secrets_shows_them_empty(tmp_path):
    result = run_config(project(tmp_path))
    lines = config_lines(result.output)
    assert "= ''" in lines["smtp_password"]
    assert "= ''" in lines["secret"]


def test_config_error_exits_2_without_traceback(tmp_path):
    result = run_config(project(tmp_path, toml='smtp_security = "tls"\n'))
    assert result.exit_code == 2
    assert "smtp_security" in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, ConfigError | KeyError | ValueError)


def test_masked_never_returns_secret_values():
    settings = config.Settings(smtp_password=PASSWORD, secret=SECRET)
    masked = settings.masked()
    assert PASSWORD not in masked.values() and SECRET not in masked.values()
    assert masked["smtp_password"] == masked["secret"] == "********"
    assert masked["from"] == ""


def test_smtp_timeout_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match="smtp_timeout .* must be a number of seconds from 1 "):
        config.load(tmp_path, environ={"MAILER_SMTP_TIMEOUT": "-1"})


# -- misspelt names --------------------------------------------------------------------------


def test_unknown_key_in_toml_names_the_closest(tmp_path):
    with pytest.raises(ConfigError) as err:
        config.load(project(tmp_path, toml='smtp_hots = "typo"\n'), environ={})
    assert str(err.value).endswith("unknown setting 'smtp_hots' (did you mean 'smtp_host'?)")
    with pytest.raises(ConfigError) as err:
        config.load(project(tmp_path / "2", toml='zzzzzz = "x"\n'), environ={})
    assert str(err.value).endswith("unknown setting 'zzzzzz'")


def test_misspelt_variables_are_warnings_not_printed(tmp_path, capsys):
    root = project(tmp_path, dotenv="MAILER_RATE=5/s\nexport MAILER_PAUZE=3\n")
    environ = {"MAILER_SMTP_HSOT": "x", "MAILER_NOW": "2026-01-01T00:00:00Z", "OTHER": "1"}
    settings = config.load(root, environ=environ)
    assert settings.warnings == (
        f"{root.resolve()}/.env:2: MAILER_PAUZE is not a setting (did you mean MAILER_PAUSE?)",
        "MAILER_SMTP_HSOT is not a setting (did you mean MAILER_SMTP_HOST?)",
    )
    assert settings.smtp_host == "localhost" and settings.pause == 0
    assert capsys.readouterr() == ("", "")  # config never prints; the CLI does
    # Warnings are not settings: they do not make two equal configurations differ.
    assert settings == config.load(root, environ={"MAILER_NOW": "2026-01-01T00:00:00Z"})
    assert "warnings" not in settings.masked()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "Infinity"])
@pytest.mark.parametrize("name", ["smtp_timeout", "pause", "retry_delay"])
def test_nan_and_inf_are_refused(tmp_path, name, value):
    with pytest.raises(ConfigError) as err:
        config.load(project(tmp_path), environ={f"MAILER_{name.upper()}": value})
    what = config.BOUNDS[name].describe()
    assert str(err.value) == f"setting {name} (from environment) must be {what}, got {value!r}"


def test_commands_load_only_what_they_use(tmp_path):
    """A command imports its own module only: `mailer config` never loads lint, the bounce
    parsers, DNS checks or the preview server (the group imports commands by name)."""
    root = project(tmp_path)
    code = (
        "import sys\n"
        "from mailer.cli import main\n"
        "try:\n"
        "    main(['-C', sys.argv[1], 'config'], standalone_mode=False)\n"
        "finally:\n"
        "    heavy = ['mailer.lint', 'mailer.feedback.classify', 'mailer.deliver.dnsrecords',\n"
        "             'mailer.preview']\n"
        "    print('LOADED', [m for m in heavy if m in sys.modules])\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "LOADED []"


# -- database_url: a password in it is a secret --------------------------------------------


def test_config_masks_the_password_in_database_url(tmp_path):
    url = f"postgresql://mailer:{PASSWORD}@db.internal:5432/news"
    result = run_config(project(tmp_path, dotenv=f"MAILER_DATABASE_URL={url}\n"))
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    line = config_lines(result.output)["database_url"]
    assert "'postgresql://mailer:********@db.internal:5432/news'" in line
    assert line.endswith("MAILER_DATABASE_URL, from .env")


def test_a_database_url_with_a_password_is_refused_in_mailer_toml(tmp_path):
    toml = f'database_url = "postgresql://mailer:{PASSWORD}@db/news"\n'
    result = run_config(project(tmp_path, toml=toml))
    assert result.exit_code == 2, result.output
    assert "database_url holds a password, and this file is committed" in result.output
    assert PASSWORD not in result.output
    assert "Traceback" not in result.output
    ok = run_config(project(tmp_path / "ok", toml='database_url = "postgresql://mailer@db/n"\n'))
    assert ok.exit_code == 0, ok.output


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MAILER_DATABASE_URL", "mysql://u@h/db", "database_url must be a postgresql:// URL"),
        ("MAILER_TRANSPORT", "postmark", "transport must be one of smtp, ses"),
        ("MAILER_CLAIM_TIMEOUT", "0s", "claim_timeout (from environment) must be a duration"),
    ],
)
def test_bad_issue_14_settings_are_one_line(tmp_path, name, value, message):
    result = run_config(project(tmp_path), **{name: value})
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
