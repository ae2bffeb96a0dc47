//! Rewrites a qcow2 image with its own content (a debugging aid): `rewrite IN OUT`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output] = &args[..] else {
        return Err("usage: rewrite IN OUT".into());
    };
    let file = std::fs::read(input)?;
    let image = qcow2::Image::parse(&file)?;
    for s in image.snapshots() {
        println!("snapshot {} {} {} bytes", s.id, s.name, s.virtual_size);
    }
    let out = image.with_active(&image.read_active()?)?;
    std::fs::write(output, out)?;
    Ok(())
}
