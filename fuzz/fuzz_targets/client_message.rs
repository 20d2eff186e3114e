#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(broken) = app_fuzz::client_message(data) {
        panic!("{broken}");
    }
});
