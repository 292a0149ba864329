"""VLCoT annotations: the text targets (degradation, three understandings) and the tags of each sample."""
