//! Prints what the parser sees in an image: `cargo run -p varstore --example dump FILE`.
fn main() {
    let path = std::env::args().nth(1).expect("usage: dump FILE");
    let image = std::fs::read(&path).expect("read");
    match varstore::Varstore::parse(&image) {
        Err(e) => println!("{path}: {e}"),
        Ok(store) => {
            println!(
                "{path}: {} records, {} live, free at 0x{:X}, verdict {}",
                store.records().len(),
                store.live_variables().len(),
                store.free_offset(),
                store.verdict()
            );
            for r in store.live_variables() {
                println!(
                    "  {:#07x} {} {} {} {} {:?}",
                    r.offset,
                    r.state(),
                    r.guid,
                    r.name(),
                    r.data.len(),
                    varstore::decode::summary(r)
                );
            }
            for f in store.findings() {
                println!("  {f}");
            }
        }
    }
}
