//! A user's own `runner`: every subcommand and flag, plus their driver.

fn main() -> std::process::ExitCode {
    runner::main_with(runner::Registry::builtin().with(forloop_example_byo_driver::CountingDriver))
}
