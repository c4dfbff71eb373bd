//! The floor `scripts/bench` holds the fronts to: a program built as they are (static, the release
//! profile's optimisation, LTO, panic and stripping) that exits at once. Built with rustc alone.
fn main() {}
