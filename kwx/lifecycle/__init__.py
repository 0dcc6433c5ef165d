"""Running a season: forward retraining, its promotion policy, realized monitoring and drift, the schedule."""
