RUN echo hi
FROM debian
