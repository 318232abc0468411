"""The protocol over REST: the /v2 routes (`routes`), their bodies (`codec`: JSON and the
binary-data extension) and the OpenAPI models (`schemas`)."""
