// Package dashboards holds the Grafana dashboard over modelsplit's
// Prometheus metrics (modelsplit.json) and a test that keeps it in step with
// the metrics package: every series a panel queries is registered by
// metrics.New(), with the labels the panel selects and groups by, counters
// are rated and gauges are not, and every registered series has a panel.
// Import it in Grafana (Dashboards → New → Import → upload the JSON, pick a
// Prometheus data source for the DS_PROMETHEUS input); README.md describes
// the rows and the scrape config.
package dashboards
