//! What the commands print: item lines, the summary table, the verification result, and the
//! progress bars (stderr, on a terminal, for large copies).

use std::io::{self, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::copy::{Cat, Item, Outcome, TargetOnly};
use super::verify::Mismatch;

/// Copies smaller than this finish too fast for a bar to be worth drawing.
const BAR_THRESHOLD: u64 = 200;

/// A progress bar on stderr, drawn only on a terminal and only once the work is known to be
/// large (its length may be set after creation).
pub struct Progress {
    pb: ProgressBar,
    show: bool,
}

impl Progress {
    pub fn hidden() -> Self {
        Self {
            pb: ProgressBar::hidden(),
            show: false,
        }
    }

    pub fn set_len(&self, len: u64) {
        self.pb.set_length(len);
        if self.show && len >= BAR_THRESHOLD && self.pb.is_hidden() {
            self.pb.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    pub fn inc(&self, n: u64) {
        self.pb.inc(n);
    }

    pub fn finish(&self) {
        self.pb.finish_and_clear();
    }
}

/// A bar for `what`; `show` = may draw at all (stderr is a terminal).
pub fn bar(len: u64, what: &str, show: bool) -> Progress {
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
    let style = ProgressStyle::with_template("{msg:>15} [{bar:40}] {pos}/{len} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(what.to_string());
    let p = Progress { pb, show };
    p.set_len(len);
    p
}

fn verb(o: Outcome, dry_run: bool) -> &'static str {
    match (o, dry_run) {
        (Outcome::Create, true) => "create",
        (Outcome::Create, false) => "created",
        (Outcome::Update, true) => "update",
        (Outcome::Update, false) => "updated",
        (Outcome::Unchanged, _) => "unchanged",
        (Outcome::Keep, true) => "keep",
        (Outcome::Keep, false) => "kept",
        (Outcome::Skip, true) => "skip",
        (Outcome::Skip, false) => "skipped",
        (Outcome::Fail, true) => "FAIL",
        (Outcome::Fail, false) => "FAILED",
    }
}

fn line(out: &mut dyn Write, it: &Item, dry_run: bool) -> io::Result<()> {
    let v = verb(it.outcome, dry_run);
    match &it.note {
        Some(n) => writeln!(out, "  {v:<9} {} {}: {n}", it.cat.noun(), it.name),
        None => writeln!(out, "  {v:<9} {} {}", it.cat.noun(), it.name),
    }
}

/// A dry run lists every item; a real run the ones worth a look (changed, kept, skipped,
/// failed), and counts the created ones that carry a note.
pub fn print_items(out: &mut dyn Write, items: &[Item], dry_run: bool) -> io::Result<()> {
    if dry_run {
        for it in items {
            line(out, it, true)?;
        }
        return Ok(());
    }
    for it in items.iter().filter(|i| {
        matches!(
            i.outcome,
            Outcome::Update | Outcome::Keep | Outcome::Skip | Outcome::Fail
        )
    }) {
        line(out, it, false)?;
    }
    let noted = items
        .iter()
        .filter(|i| i.outcome == Outcome::Create && i.note.is_some() && i.cat == Cat::Accounts)
        .count();
    if noted > 0 {
        writeln!(
            out,
            "  note: {noted} new account(s) got a new token path inside the target (--dry-run lists them)"
        )?;
    }
    Ok(())
}

pub fn print_target_only(out: &mut dyn Write, t: &TargetOnly) -> io::Result<()> {
    if t.accounts > 0 || t.plugins > 0 {
        writeln!(
            out,
            "  note: the target also holds {} account(s) and {} plugin state(s) the source does not; they are left as they are",
            t.accounts, t.plugins
        )?;
    }
    Ok(())
}

/// The per-category table: imported (created + updated), unchanged, skipped (kept or not
/// carried), failed.
pub fn print_summary(out: &mut dyn Write, items: &[Item], dry_run: bool) -> io::Result<()> {
    let head = if dry_run { "would import" } else { "imported" };
    writeln!(out, "Summary:")?;
    writeln!(
        out,
        "  {:<16} {head:>12} {:>10} {:>9} {:>7}",
        "", "unchanged", "skipped", "failed"
    )?;
    for cat in Cat::ALL {
        let n = |f: &dyn Fn(Outcome) -> bool| {
            items
                .iter()
                .filter(|i| i.cat == cat && f(i.outcome))
                .count()
        };
        writeln!(
            out,
            "  {:<16} {:>12} {:>10} {:>9} {:>7}",
            cat.label(),
            n(&|o| matches!(o, Outcome::Create | Outcome::Update)),
            n(&|o| o == Outcome::Unchanged),
            n(&|o| matches!(o, Outcome::Keep | Outcome::Skip)),
            n(&|o| o == Outcome::Fail),
        )?;
    }
    Ok(())
}

pub fn print_verification(
    out: &mut dyn Write,
    checked: usize,
    mismatches: &[Mismatch],
) -> io::Result<()> {
    if mismatches.is_empty() {
        writeln!(
            out,
            "Verification: {checked} item(s) read back from the target and compared: all equal."
        )
    } else {
        writeln!(
            out,
            "Verification: {checked} item(s) read back; {} MISMATCH(ES):",
            mismatches.len()
        )?;
        for m in mismatches {
            writeln!(out, "  MISMATCH  {} {}: {}", m.cat.noun(), m.name, m.what)?;
        }
        Ok(())
    }
}
