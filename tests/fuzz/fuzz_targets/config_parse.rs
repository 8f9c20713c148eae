//! Any text as the TOML configuration file, and any lines as `DISTILLGUARD__...` environment
//! overrides: a configuration or an error naming the problem, never a panic.
//!
//! Input: the TOML text, then optionally a NUL byte and `KEY=VALUE` lines for the environment.
#![no_main]

use distillguard::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (toml_part, env_part) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(text) = std::str::from_utf8(toml_part) {
        if let Ok(c) = Config::from_toml(text) {
            let _ = c.validate();
        }
    }
    let env: Vec<(String, String)> = String::from_utf8_lossy(env_part)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Ok(c) = Config::load_with_env(None, env) {
        let _ = c.validate();
    }
});
