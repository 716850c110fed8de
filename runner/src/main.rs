//! The `runner` binary: the library's CLI with the drivers this build carries.

fn main() -> std::process::ExitCode {
    runner::main_with(runner::Registry::builtin())
}
