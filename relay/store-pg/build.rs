// The migrations are embedded at compile time (`sqlx::migrate!`): a new or changed one rebuilds
// the crate.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
