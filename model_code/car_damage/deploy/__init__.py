"""Deploy tool: S3 model registry, SageMaker endpoints (create/update/delete), autoscaling, Batch Transform,
training jobs and invocation. Run ``python -m car_damage.deploy --help``.

Modules: ``api`` (the single door for AWS calls, dry-run), ``resources`` (content-named models and endpoint
configs), ``s3_models`` (publish-model), ``endpoints``, ``autoscale``, ``jobs`` (batch-transform, train-job),
``invoke``, ``cli``. boto3 is imported only when a call is made (``pip install 'car-damage-maskrcnn[aws]'``).
"""
