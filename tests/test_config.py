import pytest

from rtserver.backends.config import Config, ConfigError, load_config


def test_defaults_are_documented_and_frozen():
    config = load_config(environ={})
    assert config == Config()
    with pytest.raises(AttributeError):
        config.server.port = 1  # type: ignore[misc]


def test_file_then_environment_then_overrides(tmp_path):
    path = tmp_path / "rt.toml"
    path.write_text('[server]\nport = 9000\nhost = "0.0.0.0"\n[bus]\nshards = 4\n')
    config = load_config(path, environ={"RTSERVER_SERVER__PORT": "9100", "RTSERVER_BUS__RETENTION": "50"},
                         overrides={"server": {"host": "127.0.0.2"}})
    assert (config.server.port, config.server.host, config.bus.shards, config.bus.retention) == (
        9100, "127.0.0.2", 4, 50)


def test_unknown_keys_are_errors_that_name_the_key(tmp_path):
    path = tmp_path / "rt.toml"
    path.write_text("[server]\nprot = 1\n")
    with pytest.raises(ConfigError, match="prot"):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match="nosuch"):
        load_config(environ={"RTSERVER_NOSUCH__X": "1"})


def test_wrong_types_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="port"):
        load_config(environ={"RTSERVER_SERVER__PORT": '"eighty"'})


def test_a_redis_url_that_cannot_be_used_is_an_error():
    with pytest.raises(ConfigError, match="redis_url.*redis:// or rediss://"):
        load_config(environ={"RTSERVER_BUS__REDIS_URL": '"http://cache:6379"'})
    with pytest.raises(ConfigError, match="redis_url"):
        load_config(environ={"RTSERVER_BUS__REDIS_URL": '"redis://cache:6379/zero"'})
    assert load_config(environ={"RTSERVER_BUS__REDIS_URL": '"rediss://u:p@cache:6380/2"'}).bus.redis_url


def test_read_shards_need_a_redis_url_and_name_existing_shards():
    with pytest.raises(ConfigError, match="read_shards needs bus.redis_url"):
        load_config(environ={"RTSERVER_BUS__READ_SHARDS": "[1]"})
    with pytest.raises(ConfigError, match="between 0 and 15"):
        load_config(environ={"RTSERVER_BUS__REDIS_URL": '"redis://cache"', "RTSERVER_BUS__READ_SHARDS": "[16]"})
    assert load_config(environ={"RTSERVER_BUS__REDIS_URL": '"redis://cache"',
                                "RTSERVER_BUS__READ_SHARDS": "[0, 3]"}).bus.read_shards == [0, 3]


def test_the_shipped_development_config_loads():
    config = load_config("config/rtserver.toml", environ={})
    assert config.auth.hs256_secret and config.server.port == 8080


def test_push_is_off_by_default_and_its_sections_are_checked():
    assert load_config(environ={}).push.enabled is False
    with pytest.raises(ConfigError, match="the node pushes itself, so it needs a provider"):
        load_config(environ={}, overrides={"push": {"enabled": True}})
    with pytest.raises(ConfigError, match="key_id, team_id and topic"):
        load_config(environ={}, overrides={"push": {"apns": {"key_file": "AuthKey.p8"}}})
    with pytest.raises(ConfigError, match="sevice_account_file"):
        load_config(environ={}, overrides={"push": {"fcm": {"sevice_account_file": "sa.json"}}})
