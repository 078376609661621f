// placeholder until the chain benchmark is written
fn main() {}
