//! What a long repository operation is doing right now, for a progress display that polls it
//! (the operation never waits on the terminal).

use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Activity(Mutex<String>);

impl Activity {
    pub fn set(&self, what: impl Into<String>) {
        *self.0.lock().expect("lock") = what.into();
    }

    pub fn get(&self) -> String {
        self.0.lock().expect("lock").clone()
    }
}
