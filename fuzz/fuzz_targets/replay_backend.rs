//! Fuzz target: what a backend sends `vgt-replay --backend-cmd` (`vgt_replay::backend::fuzzing`):
//! display-socket messages of any code, size and split, used-ring entries with any id, length
//! and index jump, chains in flight, recorded chains laid out into the rings. The backend is
//! the thing under suspicion: it must never make replay panic, allocate without bound, complete
//! a chain that is not in flight or return more response bytes than the chain can hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vgt_replay::backend::fuzzing::run(data));
