//! Envoy's admin endpoint on loopback, as every e2e Envoy exposes it: readiness and stats.

use std::time::Duration;

use super::procs::ProcessGroup;

pub struct Admin {
    pub port: u16,
    client: reqwest::Client,
}

impl Admin {
    pub fn new(port: u16) -> Admin {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("admin client");
        Admin { port, client }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits for `/ready`; panics with the log's tail if Envoy exits or is not ready in 30 s
    /// (~0.5 s is typical; 30 s allows for a cold V8 compile on a busy machine).
    pub async fn wait_ready(&self, proc: &mut ProcessGroup) {
        let url = self.url("/ready");
        for _ in 0..300 {
            proc.assert_running();
            if let Ok(resp) = self.client.get(&url).send().await {
                if resp.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("e2e: Envoy not ready after 30 s\n{}", proc.log_tail(40));
    }

    /// `/ready`'s status code; None when nothing answers (Envoy gone).
    pub async fn ready_status(&self) -> Option<u16> {
        let resp = self.client.get(self.url("/ready")).send().await.ok()?;
        Some(resp.status().as_u16())
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> String {
        self.client
            .get(self.url(path))
            .query(query)
            .send()
            .await
            .unwrap_or_else(|e| panic!("admin {path}: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("admin {path} body: {e}"))
    }

    /// Every stat whose name matches the regex `filter` (Envoy's admin syntax), as
    /// (name, value) pairs in Envoy's order; histograms come with their summary text.
    pub async fn stats_matching(&self, filter: &str) -> Vec<(String, String)> {
        let text = self.get("/stats", &[("filter", filter)]).await;
        text.lines()
            .filter_map(|line| {
                let (key, value) = line.split_once(": ")?;
                Some((key.to_owned(), value.trim().to_owned()))
            })
            .collect()
    }

    /// A counter or gauge; 0 when Envoy has not created it yet.
    pub async fn stat(&self, name: &str) -> u64 {
        let exact = format!("^{}$", name.replace('.', "\\."));
        self.stats_matching(&exact)
            .await
            .into_iter()
            .find_map(|(key, value)| (key == name).then(|| value.parse().ok()).flatten())
            .unwrap_or(0)
    }

    /// `/stats/prometheus` as text.
    pub async fn prometheus(&self) -> String {
        self.get("/stats/prometheus", &[]).await
    }
}
