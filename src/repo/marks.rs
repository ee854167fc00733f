//! Garbage marks in the store (`garbage/<id>`), and the check a backup makes before it
//! commits: nothing it depends on may have been condemned or deleted while it ran.

use std::collections::HashSet;

use super::Repository;
use crate::error::{Error, Result};
use crate::format::garbage::GarbageMark;
use crate::id::{MarkId, PackId, SegmentId, SessionId};
use crate::store::{object_name, FileKind};

/// How long a backup may have run for its check before the commit to trust the listing of
/// `index/` (see [`Repository::check_before_commit`]): a mark is carried out (its packs,
/// segments and then the mark itself deleted) no sooner than prune's grace period after it
/// was written, so a shorter run cannot have missed one, even where a listing still shows
/// objects just deleted. A longer run reads the index again.
const TRUST_LISTING_WITHIN: std::time::Duration = std::time::Duration::from_secs(600);

/// What a backup read at its start, for its check before the commit.
pub struct BackupStart<'a> {
    pub marks: &'a Marks,
    /// The index segments its index was built from.
    pub segments: &'a HashSet<SegmentId>,
    pub index: &'a super::Index,
    /// When it read them.
    pub at: std::time::Instant,
}

/// The union of a set of garbage marks.
#[derive(Debug, Default, Clone)]
pub struct Marks {
    /// The marks themselves.
    pub ids: HashSet<MarkId>,
    /// Condemned packs.
    pub packs: HashSet<PackId>,
    /// Condemned session keys.
    pub sessions: HashSet<SessionId>,
    /// Superseded index segments.
    pub segments: HashSet<SegmentId>,
}

impl Marks {
    pub fn of(marks: &[(MarkId, GarbageMark)]) -> Marks {
        let mut out = Marks::default();
        for (id, m) in marks {
            out.ids.insert(*id);
            out.packs.extend(m.packs.iter().copied());
            out.sessions.extend(m.sessions.iter().copied());
            out.segments.extend(m.segments.iter().copied());
        }
        out
    }
}

impl Repository {
    /// Seals and stores a mark under a fresh id.
    pub fn save_mark(&self, mark: &GarbageMark) -> Result<MarkId> {
        let id = MarkId::random()?;
        self.save_object(&id, mark)?;
        Ok(id)
    }

    /// Every garbage mark the owner signed, in listing order. A mark signed by anyone else
    /// (a writer cannot condemn anything) is left out with a warning; one that does not open
    /// stops the load.
    pub fn load_marks(&self) -> Result<Vec<(MarkId, GarbageMark)>> {
        let mut out = Vec::new();
        self.for_each_object::<GarbageMark>(|id, m| {
            match m {
                Ok(m) => out.push((id, m)),
                Err(e) if e.is_untrusted() => tracing::warn!("garbage mark ignored: {e}"),
                Err(e) => return Err(e),
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The marks a backup takes into account: like [`Repository::load_marks`], but a mark
    /// that does not open is left out with a warning instead of stopping the backup. That is
    /// safe because prune, which would carry such a mark out, refuses to run while it does not
    /// open (and `check` names it).
    pub fn load_marks_for_backup(&self) -> Result<Vec<(MarkId, GarbageMark)>> {
        let mut out = Vec::new();
        self.for_each_object::<GarbageMark>(|id, m| {
            match m {
                Ok(m) => out.push((id, m)),
                Err(e) if e.is_integrity() => tracing::warn!("garbage mark ignored: {e}"),
                Err(e) => return Err(e),
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The check a backup makes after its packs are stored and before it writes its index
    /// segment and snapshot (docs/FORMAT.md, "Garbage collection"): no mark it did not see at
    /// its start condemns its session or one of its packs, its packs and key still exist, and
    /// every blob it found already stored (`used`) is in the index as read now, in a pack no
    /// mark condemns (the pack it was in at the start, or a repacked or re-encrypted copy).
    /// Otherwise the backup stops with [`Error::Conflict`] and commits nothing; its packs are
    /// leftovers for a later prune, and a rerun is safe.
    pub fn check_before_commit(
        &self,
        start: &BackupStart,
        session: &SessionId,
        own: &[PackId],
        used: &super::index::BlobSet,
    ) -> Result<()> {
        let conflict = |what: String| {
            Err(Error::Conflict(format!(
                "{what} while this backup ran (a prune or re-encryption ran concurrently); \
                 nothing was committed: run the backup again"
            )))
        };
        let (seen, index) = (start.marks, start.index);
        let own_set: HashSet<&PackId> = own.iter().collect();
        // Packs condemned since the start.
        let mut newly = HashSet::new();
        // Only marks this backup did not see at its start are read. Everything below is
        // read at once (independent reads: one round trip, not five).
        let marks = || {
            self.for_each_object_where::<GarbageMark>(
                |id| !seen.ids.contains(id),
                |id, m| {
                    // Untrusted or damaged: no prune carries it out (see load_marks_for_backup).
                    let m = match m {
                        Err(e) if e.is_integrity() => return Ok(()),
                        m => m?,
                    };
                    let mark = object_name(FileKind::Garbage, &id);
                    if m.sessions.contains(session) {
                        return conflict(format!("{mark} condemned this backup's session key"));
                    }
                    if let Some(p) = m.packs.iter().find(|p| own_set.contains(p)) {
                        return conflict(format!(
                            "{mark} condemned {} written by this backup",
                            object_name(FileKind::Pack, p)
                        ));
                    }
                    newly.extend(m.packs);
                    Ok(())
                },
            )
        };
        use super::in_flight::join;
        // The packs' listing only matters for this backup's own packs: an unchanged backup
        // stored none, and on a large bucket the listing is many pages.
        let stored_packs = || match own.is_empty() {
            true => Ok(Default::default()),
            false => self.stored_packs(),
        };
        let (marks, (stored, (key, (listed, damaged)))) = join(marks, || {
            join(stored_packs, || {
                join(
                    || self.store().size(FileKind::Key, session),
                    || join(|| self.segment_ids(), || self.damaged_packs()),
                )
            })
        });
        marks?;
        let stored = stored?;
        // A just-written pack may be missing from a lagging listing: ask for it directly.
        for p in own.iter().filter(|p| !stored.contains_key(*p)) {
            if let Err(Error::NotFound(_)) = self.store().size(FileKind::Pack, p) {
                return conflict(format!("{} was deleted", object_name(FileKind::Pack, p)));
            }
        }
        if let Err(Error::NotFound(_)) = key {
            return conflict(format!(
                "{} was deleted",
                object_name(FileKind::Key, session)
            ));
        }
        if used.is_empty() {
            return Ok(());
        }
        // Every blob this run found already stored must still be indexed in a pack that no
        // mark condemns: the index read now, not the listing of `data/` (which may still show
        // a pack just deleted). Segments never change once written, so while every segment
        // read at the start is still listed, that is a blob with a place in a pack neither
        // condemned since nor recorded damaged since (packs condemned or damaged at the start
        // are not in `index`): no segment is read again. Only for a run shorter than
        // TRUST_LISTING_WITHIN, since a listing may lag behind deletions.
        let listed: HashSet<SegmentId> = listed?.into_iter().collect();
        if start.at.elapsed() < TRUST_LISTING_WITHIN && start.segments.is_subset(&listed) {
            let damaged = damaged?;
            let gone = |p: &PackId| newly.contains(p) || damaged.contains(p);
            let in_place = |b: &crate::id::BlobId| {
                index.get(*b).is_some_and(|l| !gone(&l.pack))
                    || index.locations(*b).iter().any(|l| !gone(&l.pack))
            };
            if (newly.is_empty() && damaged.is_empty()) || index.members(used).all(in_place) {
                return Ok(());
            }
        }
        // A prune rewrote the index, or condemned a pack a blob was in: the index read now
        // decides (a blob repacked or re-encrypted meanwhile is found in its new pack).
        let (now, _, _) = self.load_index_for_backup()?;
        if let Some(b) = index.members(used).find(|b| !now.contains(**b)) {
            let was = index.get(*b).map(|l| object_name(FileKind::Pack, &l.pack));
            return conflict(format!(
                "{} was condemned or deleted",
                was.unwrap_or_else(|| "a pack".into())
            ));
        }
        Ok(())
    }
}
