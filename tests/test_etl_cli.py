"""`fluxion etl load` as a scheduler sees it: exit status and messages."""

from __future__ import annotations

from backend.cli import EXIT_FILES_REJECTED, main
from etl.generate import generate_exports


def _load(tmp_path, redis_url, key_prefix, *extra):
    argv = ["etl", "load", str(tmp_path / "in"), "--db", str(tmp_path / "v.duckdb")]
    return main([*argv, "--redis", redis_url, "--key-prefix", key_prefix, *extra])


def test_a_rejected_file_loads_the_rest_but_exits_non_zero(
    redis_url, tmp_path, key_prefix, capsys
):
    generate_exports(tmp_path / "in", stores=2, rows_per_store=50)
    empty = tmp_path / "in" / "store_09_2026-01-05.csv"
    empty.write_bytes(b"")

    assert _load(tmp_path, redis_url, key_prefix) == EXIT_FILES_REJECTED
    err = capsys.readouterr().err
    assert "100 rows loaded" in err and "1 files rejected" in err
    assert f"rejected: {empty}" in err and "is empty" in err

    empty.unlink()  # the store sends nothing more: a rerun is clean
    assert _load(tmp_path, redis_url, key_prefix) == 0


def test_a_wrong_format_option_is_refused_before_anything_loads(
    redis_url, tmp_path, key_prefix, capsys
):
    generate_exports(tmp_path / "in", stores=1, rows_per_store=10)

    assert _load(tmp_path, redis_url, key_prefix, "--format", "colour=red") == 2
    err = capsys.readouterr().err
    assert "cannot force 'colour'" in err and "Traceback" not in err
    assert not (tmp_path / "v.duckdb").exists()


def test_a_header_refused_under_a_forced_delimiter_names_the_forcing(tmp_path):
    import pytest

    from etl.errors import FileRejected
    from etl.formats import detect_format

    generate_exports(tmp_path, stores=1, rows_per_store=5, formats="es_excel")
    path = next(tmp_path.rglob("*.csv"))
    with pytest.raises(FileRejected, match="forced delimiter=','.*drop --format"):
        detect_format(path, force={"delimiter": ","})


def test_setup_mistakes_get_one_line_each(redis_url, tmp_path, key_prefix, capsys):
    import os

    import pytest

    generate_exports(tmp_path / "in", stores=1, rows_per_store=10)
    not_db = tmp_path / "notes.duckdb"
    not_db.write_text("not a database")
    pipe = tmp_path / "pipe.csv"
    os.mkfifo(pipe)
    base = ["etl", "load", "--redis", redis_url, "--key-prefix", key_prefix]

    assert main([*base, str(tmp_path / "in"), "--db", str(not_db)]) == 2
    assert "not a valid DuckDB database file" in capsys.readouterr().err
    assert main([*base, str(pipe), "--db", str(tmp_path / "v.duckdb")]) == 2
    assert "not a regular file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main([*base, str(tmp_path / "in"), "--chunk-rows", "0"])
    assert exit_.value.code == 2
    assert "must be above zero" in capsys.readouterr().err
