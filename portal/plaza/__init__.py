"""The model plaza's logic, apart from HTTP: field rules, index import, API examples, deploy-template
checks through the core, and the seed catalog."""
