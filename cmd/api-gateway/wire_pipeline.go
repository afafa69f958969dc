package main

// wirePipeline exports whether the newest configuration revision was refused
// (api_gateway_config_revision_rejected, api_gateway_config_revisions_rejected_total). GET
// /ready reports the refusal itself: the management API asks the pipeline (its Model).
func (a *app) wirePipeline() error {
	return a.pipe.Register(a.reg)
}
