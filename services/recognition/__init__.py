"""Recognition service (:8001): kudos and the people directory, published to Kafka."""
