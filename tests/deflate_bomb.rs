//! A decompression bomb against both receive forms: it fails with 1009,
//! and the most this process ever held at once stays far below what the
//! bomb inflates to. Alone in its binary, because the allocator counts the
//! whole process: another test's messages would count too.

mod common;

use std::alloc::System;

use cap::Cap;
use common::deflate::*;
use common::*;

/// Counts every allocation of this test binary: the most held at once is
/// the bound the bomb test checks.
#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_fails_1009_without_allocating_what_it_claims() {
    for server in ["buffer API", "whole messages"] {
        let addr = match server {
            "buffer API" => echo_server(deflate_options()).await,
            _ => message_echo_server(deflate_options()).await,
        };
        // 64 MiB of zeros in about 64 KiB, against a 1 MiB limit.
        let bomb = deflate_repeated(&[0u8; 64 * 1024], 1024);
        assert!(bomb.len() < 128 * 1024, "{}", bomb.len());
        let (mut client, _) = connect_offering(addr, "permessage-deflate").await;
        client
            .send(&frame_rsv(true, 0b100, 0x2, &bomb, Some(MASK)))
            .await;
        let frames = client.read_to_end().await;
        let close = frames.last().expect("a Close frame");
        assert_eq!(close.close_code(), Some(1009), "{server}: {frames:?}");
        // The most this whole process ever held: the limit (1 MiB), the
        // read buffers and codecs, not the 64 MiB the bomb inflates to.
        let peak = ALLOCATOR.max_allocated();
        assert!(peak < 8 << 20, "{server}: peak allocation {peak} bytes");
        eprintln!(
            "{server}: the most allocated at once so far: {} KiB",
            peak / 1024
        );
    }
}
