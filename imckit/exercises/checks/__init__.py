"""Check files of the checked exercises, one per exercise, in otter-grader's test format."""
