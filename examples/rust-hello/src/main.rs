fn main() {
    println!("hello from a static Rust binary built by kiln");
}
