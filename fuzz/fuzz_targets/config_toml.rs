#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clearbox_fuzz::config_toml(data));
