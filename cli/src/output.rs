//! What the subcommands print with: text tables, sizes, pretty JSON.

use std::fmt::{Display, Write as _};

/// One column of a text table: its heading, width and alignment, and the spaces that set it
/// off from the column before (none before the first).
pub struct Column {
    head: &'static str,
    width: usize,
    right: bool,
    gap: usize,
}

impl Column {
    /// A left-aligned column (names, times), one space after the column before.
    pub const fn left(head: &'static str, width: usize) -> Column {
        Column {
            head,
            width,
            right: false,
            gap: 1,
        }
    }

    /// A right-aligned column (numbers), one space after the column before.
    pub const fn right(head: &'static str, width: usize) -> Column {
        Column {
            head,
            width,
            right: true,
            gap: 1,
        }
    }

    /// Two spaces before this column instead of one, to set a group of columns apart.
    pub const fn apart(self) -> Column {
        Column { gap: 2, ..self }
    }
}

/// The heading line of a table.
pub fn header<const N: usize>(columns: &[Column; N]) -> String {
    line(columns, columns.iter().map(|c| c.head.to_owned()))
}

/// One line of a table: each cell padded to its column's width (a longer cell is not cut).
pub fn row<const N: usize>(columns: &[Column; N], cells: [&dyn Display; N]) -> String {
    line(columns, cells.iter().map(|c| c.to_string()))
}

fn line(columns: &[Column], cells: impl Iterator<Item = String>) -> String {
    let mut out = String::new();
    for (i, (c, cell)) in columns.iter().zip(cells).enumerate() {
        if i > 0 {
            out.extend(std::iter::repeat_n(' ', c.gap));
        }
        let w = c.width;
        if c.right {
            write!(out, "{cell:>w$}")
        } else {
            write!(out, "{cell:<w$}")
        }
        .expect("writing to a String cannot fail");
    }
    out
}

/// `1.5 MiB`-style sizes for tables.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Prints `value` as indented JSON (the `--json` output of `status` and `accounting`).
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_scales() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn table_pads_aligns_and_keeps_long_cells() {
        const COLUMNS: [Column; 3] = [
            Column::right("N", 4),
            Column::left("NAME", 6).apart(),
            Column::right("SIZE", 5),
        ];
        assert_eq!(header(&COLUMNS), "   N  NAME    SIZE");
        assert_eq!(row(&COLUMNS, [&7, &"ab", &"1 B"]), "   7  ab       1 B");
        assert_eq!(
            row(&COLUMNS, [&123456, &"longer name", &"x"]),
            "123456  longer name     x"
        );
    }
}
