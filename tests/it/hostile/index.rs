//! Forged index segments, alone or with a forged garbage mark: listings that try to get
//! genuine packs deleted, or readers sent to the wrong place.

use super::*;
use custody::format::garbage::GarbageMark;

/// A garbage mark dated two days back (past the default grace period) condemning `packs`.
fn forge_mark(e: &Estate, packs: Vec<PackId>) -> MarkId {
    let mark = GarbageMark {
        format: 1,
        time: Utc::now() - chrono::Duration::days(2),
        packs,
        ..Default::default()
    };
    e.w.save_mark(&mark).unwrap()
}

fn forge_segment(e: &Estate, id: Id, packs: Vec<PackEntries>) -> Id {
    e.w.save_object(
        &SegmentId(id),
        &IndexSegment {
            packs,
            provisional: false,
        },
    )
    .unwrap();
    id
}

/// What every index attack ends with: `check` names one of `forged`, genuine snapshots
/// restore before and after the owner's routine (prune may refuse: exit 3), and no chunk of
/// them is left only in the attacker's `packs`.
fn owner_verdict(e: &Estate, forged: &[Id], packs: &[Id], f: &mut Findings) {
    check_names(e, forged, f);
    restores(e, &e.kept(), "before", f);
    owner_routine(e, &[POLICY], false, &[EXIT_OK, EXIT_INTEGRITY], f);
    restores(e, &e.kept(), "after", f);
    data_survives(e, packs, f);
}

/// Every pack listed again with no blobs.
fn emptied_listings(e: &Estate, with_mark: bool, f: &mut Findings) {
    let emptied = e.w.load_segments().unwrap().into_iter();
    let packs: Vec<PackEntries> = emptied
        .flat_map(|(_, seg)| seg.packs)
        .map(|p| PackEntries { blobs: vec![], ..p })
        .collect();
    let seg =
        e.w.save_index_segment(&IndexSegment {
            packs,
            provisional: false,
        })
        .unwrap();
    if with_mark {
        let stored = e.w.store().list(FileKind::Pack).unwrap();
        forge_mark(e, stored.into_iter().map(|(id, _)| id.into()).collect());
    }
    owner_verdict(e, &[seg.id()], &[], f);
}

/// Attack 1: a segment listing every pack again with no blobs, and a mark dated two days
/// back condemning every pack. Expected: the two listings of each pack disagree, so prune
/// deletes nothing (it refuses, exit 3), check names the forged segment, and every kept
/// snapshot restores.
#[test]
fn emptied_listings_and_a_forged_mark_get_nothing_deleted() {
    on_both(|e, f| emptied_listings(e, true, f));
}

/// Attack 1, variant: the emptied listings alone, without a mark (prune's own mark phase
/// would find every pack unused). Expected as above.
#[test]
fn emptied_listings_alone_get_nothing_deleted() {
    on_both(|e, f| emptied_listings(e, false, f));
}

/// Where the attacker claims the genuine chunks live.
#[derive(Clone, Copy)]
enum Claim {
    /// In a pack of junk it uploaded, by a segment that sorts first (no mark).
    JunkPack,
    /// In a pack of junk, by a segment that sorts last, beside a forged mark two days old
    /// condemning every genuine data pack.
    JunkPackAndMark,
    /// In a pack that does not exist, by a segment that sorts first.
    MissingPack,
    /// In a pack of junk, by a segment that sorts first, each chunk declaring 2 GiB of
    /// plaintext (a decompression bomb's listing, and lengths that disagree with the genuine
    /// ones so that a restore cannot plan offsets from them).
    OversizedLengths,
}

/// The attacker runs on beta's backup host, so it holds beta's files: it computes their chunk
/// ids and claims that those chunks (with types and lengths as the genuine segments list them)
/// also live in a pack of its own, listed by its segment only. Claiming nothing a snapshot
/// does not use keeps that pack from looking partly unused, so prune never reads it to repack.
fn claimed_copies(e: &Estate, claim: Claim, f: &mut Findings) {
    let genuine = e.genuine_listings(BlobType::Data);
    let genuine_packs: Vec<PackId> = genuine.iter().map(|p| p.pack).collect();
    let ours = chunk_ids(&e.w, &e.genuine[3].files);
    let blobs = genuine.into_iter().flat_map(|p| p.blobs);
    let blobs = blobs.filter(|b| ours.contains(&b.id));
    let blobs = if let Claim::OversizedLengths = claim {
        blobs
            .map(|b| BlobEntry {
                raw_length: 2 << 30,
                ..b
            })
            .collect()
    } else {
        blobs.collect()
    };
    let s = Session::start(&e.w).unwrap();
    let pack = match claim {
        Claim::MissingPack => PackId::random().unwrap(),
        _ => upload_pack(&e.w, &s, BlobType::Data, &[random_bytes(200_000, 666)]).pack,
    };
    let claimed = PackEntries {
        pack,
        session: s.id,
        blobs,
    };
    let first = !matches!(claim, Claim::JunkPackAndMark);
    let seg = forge_segment(e, sorting_id(first, 1), vec![claimed]);
    if let Claim::JunkPackAndMark = claim {
        forge_mark(e, genuine_packs);
    }
    owner_verdict(e, &[seg, pack.id()], &[pack.id()], f);
}

/// Attack 2: a segment, sorting first, claims beta's chunks live in a pack of junk the writer
/// uploaded, so that prune takes the genuine packs (partly unused once the policy forgets
/// each host's first snapshot) for duplicates and condemns or repacks them. Expected: prune
/// counts no copy it has not verified, so no genuine pack goes; readers are not sent to the
/// junk; check names the junk pack or the segment; every kept snapshot restores.
#[test]
fn claimed_copies_in_a_junk_pack_get_nothing_deleted() {
    on_both(|e, f| claimed_copies(e, Claim::JunkPack, f));
}

/// Attack 2, variant (the case FORMAT.md §14b says is not yet covered): the claim sorts last,
/// and a forged mark two days old condemns every genuine data pack, so the sweep weighs the
/// claimed copies as "another copy". Expected as above.
#[test]
fn claimed_copies_in_a_junk_pack_and_a_forged_mark_get_nothing_deleted() {
    on_both(|e, f| claimed_copies(e, Claim::JunkPackAndMark, f));
}

/// Attack 2b: as attack 2, but every claimed chunk declares 2 GiB of plaintext. Expected:
/// nothing is allocated for a declared length beyond any chunk's, restore writes the files
/// from the genuine copies chunk by chunk (the listings disagree on lengths), and as attack 2.
#[test]
fn oversized_lengths_in_a_junk_pack_get_nothing_deleted_or_allocated() {
    on_both(|e, f| claimed_copies(e, Claim::OversizedLengths, f));
}

/// Attack 3: as attack 2, but the claimed pack does not exist at all. Expected: as attack 2;
/// check names the missing pack or the segment.
#[test]
fn claimed_copies_in_a_missing_pack_get_nothing_deleted() {
    on_both(|e, f| claimed_copies(e, Claim::MissingPack, f));
}

/// Attack 3b: a segment, sorting first, lists every other of beta's chunks (in pack order)
/// where it genuinely lies (its pack, session and offset) but 4 KiB longer, so that it
/// reaches into the next blob, whose listing stays genuine. A blob that fails to open where
/// it lies is left zeroed by the cipher, so a restore that opened it in the span it shares
/// with its neighbour spoiled the neighbour; and a restore that, after a failed copy, skipped
/// every listing of that pack also skipped the genuine listing of the same blob. Expected:
/// every kept snapshot restores whole, check names the segment, and as attack 2.
#[test]
fn stretched_listings_of_genuine_blobs_spoil_nothing() {
    on_both(|e, f| {
        let ours = chunk_ids(&e.w, &e.genuine[3].files);
        let stretched: Vec<PackEntries> = e
            .genuine_listings(BlobType::Data)
            .into_iter()
            .map(|p| {
                let mut blobs: Vec<BlobEntry> = p.blobs.clone();
                blobs.retain(|b| ours.contains(&b.id));
                blobs.sort_by_key(|b| b.offset);
                let blobs = blobs.into_iter().step_by(2);
                let blobs = blobs.map(|b| BlobEntry {
                    length: b.length + 4096,
                    ..b
                });
                PackEntries {
                    blobs: blobs.collect(),
                    ..p
                }
            })
            .filter(|p| !p.blobs.is_empty())
            .collect();
        assert!(!stretched.is_empty(), "beta's chunks are in no pack");
        let seg = forge_segment(e, sorting_id(true, 3), stretched);
        owner_verdict(e, &[seg], &[], f);
    });
}

/// Attack 3c: the writer replaces a genuine data pack with a valid pack of its own: sealed
/// under its own session for the genuine pack's id, so that the replacement verifies on its
/// own (a rule that spared packs which verify on their own, to keep forged listings from
/// getting sound packs recorded, let this through). Expected: the owner's `check
/// --read-data` records the pack as damaged, so the owner's next backup of those files
/// stores their chunks again instead of relying on a pack that no longer holds them.
#[test]
fn a_pack_replaced_by_a_writers_own_is_recorded_as_damaged() {
    on_both(|e, f| {
        let genuine = e.genuine_listings(BlobType::Data);
        let victim = genuine[0].pack;
        let s = Session::start(&e.w).unwrap();
        let key = PackKey::new(&e.w.id(), &s.id, s.dek(), victim);
        upload_sealed(&e.w, key, BlobType::Data, &[random_bytes(100_000, 31)]);
        let run = e.r.run(&["check", "--read-data"]);
        f.expect(run.code == EXIT_INTEGRITY, || {
            format!("check exited {}: {}", run.code, brief(&run.stderr))
        });
        let records = e.w.store().list(FileKind::Damage).unwrap();
        f.expect(!records.is_empty(), || {
            "no damage record for the replaced pack".to_string()
        });
        // The files whose chunks the replaced pack held are stored again.
        let held: HashSet<BlobId> = genuine[0].blobs.iter().map(|b| b.id).collect();
        let Some(g) = e
            .genuine
            .iter()
            .find(|g| chunk_ids(&e.w, &g.files).iter().any(|c| held.contains(c)))
        else {
            return f.0.push("no snapshot uses the replaced pack".into());
        };
        let run = e.r.run(&["backup", g.files.to_str().unwrap()]);
        f.expect(run.code == EXIT_OK, || {
            format!(
                "the owner's backup exited {}: {}",
                run.code,
                brief(&run.stderr)
            )
        });
        let elsewhere: HashSet<BlobId> =
            e.w.load_segments()
                .unwrap()
                .into_iter()
                .flat_map(|(_, seg)| seg.packs)
                .filter(|p| p.pack != victim)
                .flat_map(|p| p.blobs.into_iter().map(|b| b.id))
                .collect();
        let lost = chunk_ids(&e.w, &g.files)
            .into_iter()
            .filter(|c| held.contains(c) && !elsewhere.contains(c))
            .count();
        f.expect(lost == 0, || {
            format!("{lost} chunk(s) of the replaced pack were not stored again")
        });
    });
}

/// A segment, sorting first, names a session that has no `keys/<session>` record (`ghost`).
fn unknown_session(e: &Estate, real_pack: bool, f: &mut Findings) {
    let ghost = SessionId::random().unwrap();
    let genuine = e.genuine_listings(BlobType::Data);
    let (packs, fake) = if real_pack {
        let relisted = genuine.into_iter();
        let relisted = relisted.map(|p| PackEntries {
            session: ghost,
            ..p
        });
        (relisted.collect(), vec![])
    } else {
        let fake = PackId::random().unwrap();
        let claimed = PackEntries {
            pack: fake,
            session: ghost,
            blobs: genuine.into_iter().flat_map(|p| p.blobs).collect(),
        };
        (vec![claimed], vec![fake.id()])
    };
    let seg = forge_segment(e, sorting_id(true, 2), packs);
    owner_verdict(e, &[&[seg][..], &fake].concat(), &fake, f);
}

/// Attack 4: a segment, sorting first, lists every genuine data pack again under a session
/// that has no key record. Expected: prune deletes nothing (the listings disagree), readers
/// keep the genuine session, check names the segment, every kept snapshot restores.
#[test]
fn an_unknown_session_for_real_packs_gets_nothing_deleted() {
    on_both(|e, f| unknown_session(e, true, f));
}

/// Attack 4, variant: the segment claims every genuine data chunk for a pack that does not
/// exist, sealed by a session that has no key record. Expected as above; check names the
/// fake pack or the segment.
#[test]
fn an_unknown_session_for_a_fake_pack_gets_nothing_deleted() {
    on_both(|e, f| unknown_session(e, false, f));
}

/// Attack 6: a writer that can also write to a key holder's cache folder puts listings of its
/// own (empty ones, sealed and signed with its writer keyring) under the names of the genuine
/// segments cached there: segment ids are random, so such a listing opens under its name.
/// Expected: a cached segment another writer signed is not used; the bucket's copy is read
/// (and cached in its place), and the restore is whole.
#[test]
fn a_writers_listings_in_the_cache_are_not_used() {
    let e = Estate::new(Repo::local());
    let cache = e.r.sb.path("owner-cache");
    let with_cache = |args: &[&str]| e.r.sb.run_env(&[("CUSTODY_CACHE_DIR", &cache)], args);
    with_cache(&["ls", "latest"]).ok();
    let index = e.r.store_dir().join("index");
    let repo_cache = cache.read_dir().unwrap().next().unwrap().unwrap().path();
    let cached = repo_cache.join("index");
    let ids = list_ids(&cached);
    assert!(!ids.is_empty(), "nothing cached");
    for id in &ids {
        let genuine = std::fs::read(index.join(id)).unwrap();
        forge_segment(&e, id.parse().unwrap(), vec![]);
        std::fs::copy(index.join(id), cached.join(id)).unwrap();
        std::fs::write(index.join(id), &genuine).unwrap();
    }
    let out = e.r.sb.path("cached-restore");
    let g = e.genuine.last().unwrap();
    let run = with_cache(&["restore", &g.hex(), "--target", out.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_tree(&g.files, &restored(&out, &g.files));
    for id in &ids {
        assert_eq!(
            std::fs::read(index.join(id)).unwrap(),
            std::fs::read(cached.join(id)).unwrap(),
            "the writer's listing stayed in the cache"
        );
    }
}
