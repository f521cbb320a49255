"""Classical baselines a recurrent model must beat on the same split: forecasting (``forecast``) and
classification (``classify``)."""
