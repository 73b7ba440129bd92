"""The OCPP gateway's AWS deployment (CDK, Python): ``cd deploy && npx cdk deploy``.

See docs/deploying-aws.md.  :func:`ocpp_stack.stack.build_app` builds the app (``app.py`` and
the tests); :mod:`ocpp_stack.settings` reads the context values.  This module imports neither
the CDK nor Node.js: the settings are usable (and tested) without them.
"""
