// Package dashboards holds the Grafana dashboard over modelsplit's
// Prometheus metrics (modelsplit.json) and a test that keeps it in step with
// the metrics package: every series a panel uses exists, with the labels
// the panel groups by, and every series modelsplit exports has a panel.
// Import it in Grafana (Dashboards → New → Import → upload the JSON, pick a
// Prometheus data source).
package dashboards
