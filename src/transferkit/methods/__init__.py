"""Methods a workflow chooses among or measures with: transferability scores, domain-adaptation methods, shift
measures, and the from-scratch control."""
