//! Bytes as a registry's manifest answer, read as the master's pull and the agent's image
//! store read it (oci/src/manifest.rs: parse, pick linux/amd64 out of an index, the
//! digests and layer types), and as an image name (oci/src/reference.rs). Nothing may
//! panic; a parsed reference prints as a name that parses back to itself (the master
//! hands agents that name).
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_oci::manifest::{self, Parsed};
use plinth_oci::ImageRef;

fuzz_target!(|data: &[u8]| {
    let _ = manifest::media_type_of(data);
    for content_type in
        [None, Some(manifest::OCI_INDEX), Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8")]
    {
        match manifest::parse(data, content_type) {
            Ok(Parsed::Image(image)) => {
                let _ = manifest::descriptor_digest(image.config());
                for layer in image.layers() {
                    let _ = manifest::descriptor_digest(layer);
                    let _ = manifest::layer_compression(&layer.media_type().to_string());
                }
            }
            Ok(Parsed::Index(index)) => {
                if let Ok(chosen) = manifest::select_platform(&index) {
                    let _ = manifest::descriptor_digest(&chosen);
                }
            }
            Err(_) => {}
        }
    }

    let Ok(text) = std::str::from_utf8(data) else { return };
    if text.len() > 1024 {
        return;
    }
    if let Ok(image) = ImageRef::parse(text) {
        let printed = image.to_string();
        match ImageRef::parse(&printed) {
            Ok(again) => assert_eq!(again, image, "{text:?} prints as {printed:?}, which names another image"),
            Err(e) => panic!("{text:?} prints as {printed:?}, which does not parse: {e}"),
        }
        let _ = (image.reference(), image.name(), plinth_oci::reference::names_registry(image.registry()));
    }
});
