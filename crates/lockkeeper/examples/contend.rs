//! Several processes contend for one lock and pass it around, printing fencing tokens.
//!
//! ```text
//! cargo run -p lockkeeper --example contend -- --endpoints http://127.0.0.1:2379 --name worker-1 --rounds 3
//! ```
//! Run two or three at once (the README's demo does): each holds the lock for a moment, then
//! hands it to the next waiter in FIFO order, and every token is larger than the one before.

use std::time::Duration;

use lockkeeper::{DistributedLock, EtcdOptions, LockOptions};

struct Args {
    endpoints: Vec<String>,
    name: String,
    lock: String,
    rounds: u32,
    hold: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        endpoints: vec!["http://127.0.0.1:2379".into()],
        name: lockkeeper::default_identity(),
        lock: "demo".into(),
        rounds: 3,
        hold: Duration::from_millis(700),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--endpoints" => args.endpoints = value()?.split(',').map(str::to_owned).collect(),
            "--name" => args.name = value()?,
            "--lock" => args.lock = value()?,
            "--rounds" => args.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--hold" => {
                args.hold =
                    humantime::parse_duration(&value()?).map_err(|e| format!("--hold: {e}"))?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("contend: {e}");
            std::process::exit(2);
        }
    };
    let etcd = match EtcdOptions::new(args.endpoints.clone())
        .connect_etcd()
        .await
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("contend: {e}");
            std::process::exit(1);
        }
    };
    let opts = LockOptions::new()
        .with_identity(args.name.clone())
        .with_ttl(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(60));
    let lock = DistributedLock::new(etcd, args.lock.clone(), opts).expect("valid lock name");
    for round in 1..=args.rounds {
        println!(
            "[{}] round {round}: waiting for lock {:?}",
            args.name, args.lock
        );
        let guard = match lock.lock().await {
            Ok(g) => g,
            Err(e) => {
                eprintln!("[{}] could not acquire: {e}", args.name);
                std::process::exit(1);
            }
        };
        println!(
            "[{}] round {round}: ACQUIRED with fencing token {}",
            args.name,
            guard.token()
        );
        tokio::time::sleep(args.hold).await;
        let token = guard.token();
        match guard.release().await {
            Ok(outcome) => println!(
                "[{}] round {round}: released token {token} ({outcome:?})",
                args.name
            ),
            Err(e) => eprintln!("[{}] release failed: {e}", args.name),
        }
        // Give the others a chance to queue before we try again.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
