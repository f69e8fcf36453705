//! `extnet-docgen [--man-dir DIR] [--completion FILE]`: writes extnet's man pages and bash
//! completion (see the library). Without arguments, into the repository
//! (`docs/man/`, `packaging/completions/extnet`), where they are committed.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    // packaging/docgen → the repository
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("packaging/docgen is two levels down")
        .to_path_buf();
    let mut man_dir = repo.join(extnet_docgen::MAN_DIR);
    let mut completion = repo.join(extnet_docgen::BASH_COMPLETION);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--man-dir", Some(d)) => man_dir = d.into(),
            ("--completion", Some(f)) => completion = f.into(),
            _ => {
                eprintln!("usage: extnet-docgen [--man-dir DIR] [--completion FILE]");
                return ExitCode::from(2);
            }
        }
    }
    match write(&man_dir, &completion) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("extnet-docgen: {e}");
            ExitCode::from(1)
        }
    }
}

fn write(man_dir: &std::path::Path, completion: &std::path::Path) -> Result<(), String> {
    let err = |p: &std::path::Path| {
        let p = p.display().to_string();
        move |e: std::io::Error| format!("cannot write {p}: {e}")
    };
    std::fs::create_dir_all(man_dir).map_err(err(man_dir))?;
    // pages of subcommands that are gone go too
    for e in std::fs::read_dir(man_dir).map_err(err(man_dir))? {
        let p = e.map_err(err(man_dir))?.path();
        if p.extension().is_some_and(|x| x == "8") {
            std::fs::remove_file(&p).map_err(err(&p))?;
        }
    }
    for page in extnet_docgen::man_pages() {
        let p = man_dir.join(&page.name);
        std::fs::write(&p, page.text).map_err(err(&p))?;
        println!("{}", p.display());
    }
    if let Some(d) = completion.parent() {
        std::fs::create_dir_all(d).map_err(err(d))?;
    }
    std::fs::write(completion, extnet_docgen::bash_completion()).map_err(err(completion))?;
    println!("{}", completion.display());
    Ok(())
}
