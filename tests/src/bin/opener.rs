//! A process that opens a database the moment it is told to, as every
//! worker of a multi-process server does in its first second.
//!
//! Usage: opener DB. Prints `ready`, waits for one line on stdin, then
//! opens DB with `Database::open`, writes one row, and prints `ok` or
//! `error <message>`.

use std::io::BufRead;

use sqlite_hybrid::Database;

fn main() {
    let path = std::env::args().nth(1).expect("usage: opener DB");
    println!("ready");
    let mut go = String::new();
    let _ = std::io::stdin().lock().read_line(&mut go);
    let db = match Database::open(&path) {
        Ok(db) => db,
        Err(e) => {
            println!("error at open: {e} ({e:?})");
            return;
        }
    };
    let written = db.write(|tx| {
        tx.execute_batch("CREATE TABLE IF NOT EXISTS starts(pid INTEGER)")?;
        tx.execute("INSERT INTO starts VALUES (?1)", [std::process::id()])?;
        Ok(())
    });
    match written {
        Ok(()) => println!("ok"),
        Err(e) => println!("error at first write: {e} ({e:?})"),
    }
}
