//! The `serde` feature: round trips through serde_json, and version refusal.

use pflash::serde_format::{UnsupportedVersion, Versioned, FORMAT_VERSION};
use pflash::{Compat, Geometry, NoEvents, NoStorage, Pflash, PflashState};

/// A device stopped in the middle of a buffered write: every field of the state is set.
fn mid_buffered_write() -> (Geometry, PflashState, Vec<u8>) {
    let geometry = Geometry::arm_virt().with_compat(Compat::Qemu7_2);
    let size = geometry.size() as usize;
    let mut dev: Pflash =
        Pflash::new(geometry.clone(), vec![0xff; size], NoStorage, NoEvents).unwrap();
    // Two 16-bit chips: every command in both halves (ArmVirt's buffered program).
    dev.write(0x2_0000, &0x00e8_00e8u32.to_le_bytes());
    dev.write(0x2_0000, &0x0001_0001u32.to_le_bytes());
    dev.write(0x2_0004, &0x1234_5678u32.to_le_bytes());
    let state = dev.state();
    assert!(
        state.write_buffer.is_some() && state.wcycle == 2,
        "{state:?}"
    );
    (geometry, state, dev.into_parts().0)
}

#[test]
fn state_and_geometry_round_trip_and_resume_the_same_device() {
    let (geometry, state, content) = mid_buffered_write();
    let json = serde_json::to_string(&Versioned::new((geometry.clone(), state.clone()))).unwrap();
    assert!(json.contains(r#""compat":"qemu-7.2""#), "{json}");
    let (g2, s2): (Geometry, PflashState) = serde_json::from_str::<Versioned<_>>(&json)
        .unwrap()
        .into_inner()
        .unwrap();
    assert_eq!((&g2, &s2), (&geometry, &state));

    // The deserialized state resumes exactly where the original would go on.
    let finish = |s: &PflashState, g: &Geometry| {
        let mut dev: Pflash =
            Pflash::from_state(g.clone(), content.clone(), s, NoStorage, NoEvents).unwrap();
        dev.write(0x2_0008, &0x9abc_def0u32.to_le_bytes());
        dev.write(0x2_0000, &0x00d0_00d0u32.to_le_bytes());
        dev.write(0x2_0000, &0x00ff_00ffu32.to_le_bytes());
        (dev.state(), dev.into_parts().0)
    };
    let (after, memory) = finish(&s2, &g2);
    assert_eq!((after.clone(), memory.clone()), finish(&state, &geometry));
    assert_eq!(
        &memory[0x2_0004..0x2_000c],
        &[0x78, 0x56, 0x34, 0x12, 0xf0, 0xde, 0xbc, 0x9a]
    );
}

#[test]
fn another_format_version_is_refused_with_a_typed_error() {
    let (geometry, state, _) = mid_buffered_write();
    let json = serde_json::to_string(&Versioned::new(state)).unwrap();
    let needle = format!(r#""format_version":{FORMAT_VERSION}"#);
    assert!(json.contains(&needle), "{json}");
    for other in [0, FORMAT_VERSION + 1, u32::MAX] {
        let doc = json.replacen(&needle, &format!(r#""format_version":{other}"#), 1);
        let versioned: Versioned<PflashState> = serde_json::from_str(&doc).unwrap();
        assert_eq!(versioned.version(), other);
        let error = versioned.into_inner().unwrap_err();
        assert_eq!(
            error,
            UnsupportedVersion {
                found: other,
                supported: FORMAT_VERSION
            }
        );
        assert!(error.to_string().contains(&other.to_string()), "{error}");
    }
    // A value of another version is not parsed at all, however different it is.
    let future = r#"{"format_version":2,"value":{"registers":[1,2,3]}}"#;
    let v: Versioned<PflashState> = serde_json::from_str(future).unwrap();
    assert!(v.into_inner().is_err());
    // No version: not a versioned value.
    assert!(serde_json::from_str::<Versioned<PflashState>>(r#"{"value":null}"#).is_err());
    // Unknown fields in the types themselves are refused.
    let mut g = serde_json::to_value(&geometry).unwrap();
    g["flavour"] = 1.into();
    assert!(serde_json::from_value::<Geometry>(g).is_err());
    assert!(serde_json::from_str::<Compat>(r#""qemu-8.0""#).is_err());
}
