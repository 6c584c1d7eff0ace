// Package deployments holds no code: it is the home of the tests that check the
// deployment files beside it (the systemd unit, the CloudFormation example, the
// compose stack's nginx configuration) and the top-level compose.yaml against the
// server's own defaults in adapters/config. See README.md in this folder.
package deployments
